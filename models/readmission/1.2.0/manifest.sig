{
  "algorithm": "Ed25519",
  "key_id": "ed25519:6e2b489ab35cfe11",
  "signature": "bvMUWm/Sle20p10okQVYE/dwsN4GjnAcW8lbIk22yGVx6Kle4vX6cH6nJmCUtyCHbO6Jl7q4K7H6R3w5xeQCAw=="
}
