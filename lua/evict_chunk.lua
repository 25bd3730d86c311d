-- placeholder: being written in this session
return redis.error_reply("ERR cachet script evict_chunk not written yet")
