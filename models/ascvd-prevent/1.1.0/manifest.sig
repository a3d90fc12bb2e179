{
  "algorithm": "Ed25519",
  "key_id": "ed25519:6e89adfcf6bcc399",
  "signature": "XnIapjLWJT7CxRfg11n66RIW8QY91sbMhOAFE7x0U0y+y/sfEUIjXEAZoewpNOJPc4nmWlkAVy0ft9IO4stPAQ=="
}
