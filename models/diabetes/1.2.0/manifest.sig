{
  "algorithm": "Ed25519",
  "key_id": "ed25519:6e2b489ab35cfe11",
  "signature": "4+IHkUhIqrGFIiP4cGaKIHjvnghB6EG3Zp2O6EJnwlQlV3Gft9lqh3osmLab9Mb4KbsWRR5oWWaWDCCH8V3jBA=="
}
