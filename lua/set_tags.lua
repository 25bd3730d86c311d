-- placeholder: being written in this session
return redis.error_reply("ERR cachet script set_tags not written yet")
