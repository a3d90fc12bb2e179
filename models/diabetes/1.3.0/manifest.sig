{
  "algorithm": "Ed25519",
  "key_id": "ed25519:6e89adfcf6bcc399",
  "signature": "JI43P5DXYAdo2CaKwudmsi7x7ZnLoS4NX7uWJ4XKBI1T8t51NWXU5Xfpxn2Q+AlGOBXaKlK/5RM9AuOpcTxFCQ=="
}
