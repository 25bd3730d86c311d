#!/usr/bin/env python3
"""Write the seed corpus of the ops_model fuzzers from readable op lists.

The byte encoding mirrors the decoder in fuzz/ops_model.c (run_op and the
op_* functions): one byte per operation (bit 7 the handle, the low bits the
operation), then that operation's operands. Run it from anywhere; it
rewrites fuzz/corpus/ops_model_fuzzer/seed_* and the cluster target's copy.

    python3 fuzz/ops_seeds.py
"""
import os
import struct

OPS = ["set", "set_tags", "get", "exists_ttl", "delete", "mset", "mget",
       "evict", "clear", "prune", "expire", "get_or_set", "lock_acquire",
       "lock_release", "lock_extend", "concurrent", "fault"]
KEYS = {"k0": 0, "k1": 1, "k2": 2, "k3": 3, "c0": 4, "c1": 5, "a{b}c": 6,
        "x0y": 7}
TAGS = ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9", "user:42",
        "a b"]
FAULTS = ["script_flush", "client_kill", "garbage", "copy", "wrongtype",
          "foreign", "slock", "sunlock", "lock_expire", "abandon", "health"]
LARGE = 255  # a value length byte of 255 is a staged (70 KB) value


def tags(*names):
    m = 0
    for n in names:
        m |= 1 << TAGS.index(n)
    return struct.pack("<I", m)


def op(name, h=0):
    return bytes([OPS.index(name) | (h << 7)])


def k(name):
    return bytes([KEYS[name]])


def set_(key, length=10, ttl=0, h=0):
    return op("set", h) + k(key) + bytes([length, ttl])


def set_tags(key, t, length=10, ttl=0, h=0):
    return op("set_tags", h) + k(key) + bytes([length, ttl]) + tags(*t)


def get(key, h=0):
    return op("get", h) + k(key)


def exists(key, h=0):
    return op("exists_ttl", h) + k(key) + b"\x00"


def ttl(key, h=0):
    return op("exists_ttl", h) + k(key) + b"\x01"


def delete(key, h=0):
    return op("delete", h) + k(key)


def mset(entries, h=0):
    """entries: (key, length, ttl, tag names or None for untagged)"""
    b = op("mset", h) + bytes([len(entries) - 1])
    for key, length, t, tl in entries:
        tb = struct.pack("<I", 0x8000) if tl is None else tags(*tl)
        b += k(key) + bytes([length, t]) + tb
    return b


def mget(keys, h=0):
    return op("mget", h) + bytes([len(keys) - 1]) + b"".join(k(x) for x in keys)


def evict(t, h=0):
    return op("evict", h) + tags(*t)


def clear(dry=False, h=0):
    return op("clear", h) + (b"\x00" if dry else b"\x01")


def prune(h=0):
    return op("prune", h)


def expire(key, mode, t=("t0",), length=5, h=0):
    """mode 0: PEXPIRE 0, 1: DEL, 2: short-TTL set_tags, then time passes"""
    b = op("expire", h) + k(key) + bytes([mode])
    if mode == 2:
        b += bytes([length]) + tags(*t)
    return b


def get_or_set(key, t=(), fail=False, length=8, ttl=0, h=0):
    m = 0
    for n in t:
        m |= 1 << TAGS.index(n)
    m |= (0 if fail else 1) << 16
    return op("get_or_set", h) + k(key) + bytes([length, ttl]) + \
        struct.pack("<I", m)


def lock_acquire(slot, lock, wait=False, h=0):
    return op("lock_acquire", h) + bytes([slot, lock | (0x80 if wait else 0)])


def lock_release(slot, h=0):
    return op("lock_release", h) + bytes([slot])


def lock_extend(slot, h=0):
    return op("lock_extend", h) + bytes([slot])


def wop(kind, key, t=(), length=10, ttl=0):
    return bytes([["set", "set_tags", "delete"].index(kind), KEYS[key],
                   length, ttl]) + tags(*t)


def concurrent(a, b, h=0):
    return op("concurrent", h) + a + b


def fault(what, key="k0", src=None, h=0):
    b = op("fault", h) + bytes([FAULTS.index(what), KEYS[key]])
    if what == "copy":
        b += k(src)
    return b


SEEDS = {
    "seed_basic": [
        set_("k0"), get("k0"), exists("k0"), ttl("k0"), set_("k1", ttl=1),
        ttl("k1"), delete("k0"), get("k0"), delete("k0"),
        set_tags("x0y", ["t0"]), get("x0y"), set_("a{b}c", 0), get("a{b}c")],
    "seed_tags_evict": [
        set_tags("k0", ["t0", "t1"]), set_tags("k1", ["t1"]),
        set_tags("c0", ["t0"]), set_tags("c1", ["t0", "user:42"]), set_("k2"),
        evict(["t0"]), get("k0"), get("c0"), get("c1"), get("k1"),
        evict(["t1", "t2"]), get("k1"), evict(["user:42"])],
    "seed_retag": [
        set_tags("k0", ["t0"]), set_tags("k0", ["t1"]), evict(["t0"]),
        get("k0"), set_("k0"), evict(["t1"]), get("k0"),
        set_tags("c0", ["t2", "t3"]), delete("c0"), evict(["t2"])],
    "seed_many_tags": [
        set_tags("k0", TAGS), set_("k0"), evict(["t5"]), get("k0"),
        set_tags("k1", TAGS[:10]),
        mset([("k1", 4, 0, None), ("k2", 4, 0, TAGS)]), evict(["t9"]),
        get("k1"), get("k2"), delete("k2")],
    "seed_mset_mget": [
        mset([("k0", 5, 0, ["t0"]), ("k1", 6, 1, None), ("k0", 7, 0, None),
              ("c0", 8, 0, ["t0", "t1"]), ("c1", 0, 0, None),
              ("a{b}c", 9, 1, ["t2"])]),
        mget(["k0", "k1", "c0", "c1", "a{b}c", "k3"]), evict(["t0"]),
        mget(["c0", "k0"]), set_tags("k1", ["t1"]),
        mset([("k1", 3, 0, None), ("k3", 3, 0, ["t1"])]), evict(["t1"]),
        mget(["k1", "k3"])],
    "seed_two_prefixes": [
        set_tags("k0", ["t0"]), set_tags("k0", ["t0"], h=1), set_("k1", h=1),
        lock_acquire(0, 0), lock_acquire(0, 0, h=1), clear(),
        get("k0", h=1), get("k0"), clear(dry=True, h=1), evict(["t0"], h=1),
        get("k0", h=1), set_("k1"), clear(h=1), get("k1"), lock_release(0),
        lock_release(0, h=1)],
    "seed_prune": [
        expire("k0", 2, ["t0", "t1"]), expire("c0", 2, ["t0"]),
        set_tags("k1", ["t0"]), expire("k1", 0), set_tags("k2", ["t1"]),
        expire("k2", 1), prune(), get("k1"), evict(["t0"]), prune(),
        expire("c1", 2, ["t2"]), set_("c1"), prune()],
    "seed_locks": [
        lock_acquire(0, 0), lock_acquire(1, 0, wait=True), lock_release(1),
        lock_extend(0), lock_extend(1), fault("lock_expire", "k0"),
        lock_release(0), lock_acquire(1, 0), lock_acquire(2, 1),
        lock_acquire(1, 1), lock_release(1), lock_release(2),
        lock_acquire(3, 0), lock_release(3)],
    "seed_faults": [
        set_tags("k0", ["t0"]), set_("k1"), fault("garbage", "k1"), get("k1"),
        fault("copy", "k2", "k0"), get("k2"), fault("wrongtype", "k3"),
        get("k3"), exists("k3"), mget(["k0", "k1", "k2", "k3"]), set_("k3"),
        get("k3"), fault("foreign", "k0"), fault("foreign", "k1"),
        fault("foreign", "k2"), fault("foreign", "k3"), fault("foreign", "c0"),
        fault("script_flush"), set_tags("k2", ["t1"]), evict(["t1"]),
        clear(), fault("client_kill"), set_("k0"), get("k0"),
        set_tags("k1", ["t0"]), fault("client_kill"),
        mset([("k2", 3, 0, ["t3"]), ("k3", 3, 0, None)]), evict(["t3"]),
        prune(), clear(), fault("health"), fault("script_flush"),
        fault("health", h=1)],
    "seed_get_or_set": [
        get_or_set("k0", ["t0"]), get_or_set("k0"), get_or_set("k1", fail=True),
        get("k1"), fault("slock", "k2"), get_or_set("k2"),
        fault("sunlock", "k2"), get_or_set("k2", ["t1"]), evict(["t1"]),
        get_or_set("k2"), fault("garbage", "k3"), get_or_set("k3"),
        get_or_set("x0y", length=LARGE)],
    "seed_abandoned_eviction": [
        set_tags("k0", ["t2"]), set_tags("k1", ["t2"]), fault("abandon", "k2"),
        set_tags("k2", ["t2"]), delete("k1"), set_tags("k3", ["t2", "t3"]),
        set_tags("k3", ["t3"]), evict(["t2"]), get("k0"), get("k2"),
        get("k3"), fault("abandon", "k3"), clear()],
    "seed_large": [
        set_("k0", LARGE), get("k0"), set_tags("k1", ["t0"], LARGE),
        get("k1"), mset([("k2", LARGE, 0, None), ("k3", LARGE, 1, ["t0"])]),
        evict(["t0"]), get("k3"), get("k2"), set_tags("k2", ["t1"], LARGE),
        set_("k2", LARGE), evict(["t1"]), get("k2")],
}

# Two writers racing on a key that had tags: an untagged set against a
# tagged one. Repeated, because one attempt hits the window between the
# plain SET and untag.lua only sometimes; this is the sequence that catches
# an untag.lua without its envelope comparison (docs/FUZZING.md).
race = []
for key in ["k0", "k1", "k2", "k3", "c0", "c1", "a{b}c", "x0y"] * 2:
    race += [set_tags(key, ["t0"]),
             concurrent(wop("set", key), wop("set_tags", key, ["t1"])),
             evict(["t1"]), get(key)]
SEEDS["seed_race_untag"] = race
SEEDS["seed_race_writers"] = [
    concurrent(wop("set_tags", "k0", ["t0"]), wop("delete", "k0")),
    concurrent(wop("set", "k0"), wop("set", "k0")),
    concurrent(wop("set_tags", "k0", ["t1"]), wop("set_tags", "k0", ["t2"])),
    concurrent(wop("delete", "k0"), wop("set", "c0")),
    evict(["t1", "t2"]), get("k0"),
    concurrent(wop("set_tags", "k1", ["t0"]), wop("set_tags", "c0", ["t0"])),
    evict(["t0"])]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for target in ["ops_model_fuzzer", "ops_model_cluster_fuzzer"]:
        d = os.path.join(here, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):
            if name.startswith("seed_"):
                os.remove(os.path.join(d, name))
        for name, ops in SEEDS.items():
            assert len(ops) <= 64, name
            with open(os.path.join(d, name), "wb") as f:
                f.write(b"".join(ops))


if __name__ == "__main__":
    main()
