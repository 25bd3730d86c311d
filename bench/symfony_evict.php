<?php
// Symfony's RedisTagAwareAdapter on bench_evict's workloads, for a side by
// side figure in the same run on the same private server. bench_evict runs
// it when PHP, phpredis and Symfony's cache component are installed (the
// Debian packages php-cli, php-redis and php-symfony-cache).
//
//   php symfony_evict.php PORT ROUNDS
//
// Prints one line per workload: "symfony <name>: <median ms> <keys>", the
// keys being how many Redis held before the timed call. The shapes
// match bench_evict.c: 100-byte values, each entry with its tag and
// "extra<t % 5>", a lifetime of 600 s, written before each round outside the
// timing. Symfony's item keys may not hold ':', hence '.'.

declare(strict_types=1);

require_once '/usr/share/php/Symfony/Component/Cache/autoload.php';

use Symfony\Component\Cache\Adapter\RedisTagAwareAdapter;

if ($argc !== 3) {
    fwrite(STDERR, "usage: php symfony_evict.php PORT ROUNDS\n");
    exit(2);
}
$port = (int) $argv[1];
$rounds = max(1, (int) $argv[2]);

$redis = new Redis();
$redis->connect('127.0.0.1', $port);
$value = str_repeat('v', 100);

function populate(RedisTagAwareAdapter $a, string $stem, int $ntags, int $per, string $value): void
{
    for ($t = 0; $t < $ntags; $t++) {
        $tags = ["$stem-tag$t", 'extra'.($t % 5)];
        for ($i = 0; $i < $per; $i++) {
            $item = $a->getItem("$stem.$t.$i");
            $item->set($value)->expiresAfter(600)->tag($tags);
            $a->saveDeferred($item);
        }
        if (!$a->commit()) {
            fwrite(STDERR, "symfony_evict: commit failed\n");
            exit(1);
        }
    }
}

function median(array $v): float
{
    sort($v);
    return $v[intdiv(count($v), 2)];
}

function evict(Redis $redis, string $name, int $ntags, int $per, int $rounds, string $value): void
{
    $a = new RedisTagAwareAdapter($redis, 'sev');
    $tags = [];
    for ($t = 0; $t < $ntags; $t++) {
        $tags[] = "w-tag$t";
    }
    $ms = [];
    for ($k = 0; $k < $rounds; $k++) {
        $a->clear();
        populate($a, 'w', $ntags, $per, $value);
        $keys = $redis->dbSize();
        $t0 = hrtime(true);
        $ok = $a->invalidateTags($tags);
        $ms[] = (hrtime(true) - $t0) / 1e6;
        if (!$ok || $a->hasItem('w.0.0')) {
            fwrite(STDERR, "symfony_evict: $name: the entries are still there\n");
            exit(1);
        }
    }
    $a->clear();
    printf("symfony %s: %.2f %d\n", $name, median($ms), $keys);
}

function clear_all(Redis $redis, int $entries, int $rounds, string $value): void
{
    $a = new RedisTagAwareAdapter($redis, 'scl');
    $ms = [];
    for ($k = 0; $k < $rounds; $k++) {
        populate($a, 'c', intdiv($entries, 200), 200, $value);
        $keys = $redis->dbSize();
        $t0 = hrtime(true);
        $ok = $a->clear();
        $ms[] = (hrtime(true) - $t0) / 1e6;
        if (!$ok || $a->hasItem('c.0.0')) {
            fwrite(STDERR, "symfony_evict: clear: the entries are still there\n");
            exit(1);
        }
    }
    printf("symfony clear 20k tagged entries: %.2f %d\n", median($ms), $keys);
}

evict($redis, 'evict 50 tags x 200 entries', 50, 200, $rounds, $value);
evict($redis, 'evict 1 tag of 200 entries', 1, 200, $rounds, $value);
evict($redis, 'evict 1 tag of 5 entries', 1, 5, $rounds, $value);
clear_all($redis, 20000, $rounds, $value);
