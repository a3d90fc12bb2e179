{
  "algorithm": "Ed25519",
  "key_id": "ed25519:6e2b489ab35cfe11",
  "signature": "JCQnHMrAHXBFBO3c79i0F7lLPpa7atl/529jy62xNNzkpkk7+NEI6SWCZr9nBOd88+ds0w9KKZKCnnxjGElVDA=="
}
