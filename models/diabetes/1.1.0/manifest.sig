{
  "algorithm": "Ed25519",
  "key_id": "ed25519:6e2b489ab35cfe11",
  "signature": "Qa10MydLAiimHeS8dPYdVryfmiPT2UCLwZIghqc/cAuj5oQM7sVYhXwcodNlWVvhLNfjQ3oosTbxlCOL1sgmBQ=="
}
