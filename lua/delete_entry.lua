-- placeholder: being written in this session
return redis.error_reply("ERR cachet script delete_entry not written yet")
