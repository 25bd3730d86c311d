-- placeholder: being written in this session
return redis.error_reply("ERR cachet script prune_chunk not written yet")
