{
  "algorithm": "Ed25519",
  "key_id": "ed25519:6e89adfcf6bcc399",
  "signature": "V+irfxwS9vWyAsA95OOIhuLbeEsWZwSRsoqUywamGh71sUbqAC8hN+RNk1IcDSBC9FrSVnAO1kaSdzOCPfB7Bw=="
}
