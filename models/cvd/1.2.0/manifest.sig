{
  "algorithm": "Ed25519",
  "key_id": "ed25519:6e2b489ab35cfe11",
  "signature": "sQWoruegBTseF9RPC7Y7iK/qoADioRZxQgeALFwKNc3xSfry5/P+uxle9Cdciy9tkUbk2/Z6cXf4xXs5U/fHBw=="
}
