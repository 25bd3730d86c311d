-- placeholder: being written in this session
return redis.error_reply("ERR cachet script lock_release not written yet")
