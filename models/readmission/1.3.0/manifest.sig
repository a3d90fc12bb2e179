{
  "algorithm": "Ed25519",
  "key_id": "ed25519:6e89adfcf6bcc399",
  "signature": "rrmWkEHd2aUIZqCDemAe5v4eEwACwkm4rjYAzsott4l8ZhFM412qtYnu61hiKJUJ9iE80m4IMIHIWhm27E3eAg=="
}
