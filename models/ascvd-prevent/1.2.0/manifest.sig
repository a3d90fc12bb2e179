{
  "algorithm": "Ed25519",
  "key_id": "ed25519:a11e26df37027a46",
  "signature": "Fmp/K8SLdbhk7YrO13a2wvGDH5TDvEeLD6E1omSvO2cnj7Ad0WVv9b1hYPjUniWY/nOT8KcpH71RkrRokwYpCA=="
}
