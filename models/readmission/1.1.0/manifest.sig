{
  "algorithm": "Ed25519",
  "key_id": "ed25519:6e2b489ab35cfe11",
  "signature": "iaB9oMafMxTqXIfJy1bpr6ua8CUbJivTWAT9pD8dWvJfVKHcvFzADuxy67XZSA2zQn80sjAbna8ntFGwk7o/CA=="
}
