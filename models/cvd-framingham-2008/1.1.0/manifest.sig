{
  "algorithm": "Ed25519",
  "key_id": "ed25519:6e89adfcf6bcc399",
  "signature": "/dctaQ0G4Rz2SL3lFWzbaEN3Zr3SGYvE5whB7y4YWXRVFcNA65CiHWmmHAdXvedwq3ljopF5GqbFZO22MTiPCA=="
}
