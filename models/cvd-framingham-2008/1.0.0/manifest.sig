{
  "algorithm": "Ed25519",
  "key_id": "ed25519:6e2b489ab35cfe11",
  "signature": "WE58C6ek+2yoej7wg/96lfG8jtcK8qJpN9a+Oql3S1QwuIhM8BNOcXrm10EL3liSFRPux4Cm8u9wC66TtFmnAQ=="
}
