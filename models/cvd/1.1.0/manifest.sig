{
  "algorithm": "Ed25519",
  "key_id": "ed25519:6e2b489ab35cfe11",
  "signature": "a148u01C/x8nN4j7VPxoSNtrrNcdVYTCtM6rr0GRoox8Ium4pL9lbR8MS759lHYZlaoRofGFgZd2wAyDGe81DQ=="
}
