-- placeholder: being written in this session
return redis.error_reply("ERR cachet script lock_extend not written yet")
