{
  "algorithm": "Ed25519",
  "key_id": "ed25519:6e89adfcf6bcc399",
  "signature": "ryGv1WZEeg8nisBVMX675JO2NASsp/L+zUreukxJTHij8yMMjQC1GBkUbHuzFsLRJuF5uZH1j2/HwEieLr+TAA=="
}
