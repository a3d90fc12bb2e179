{
  "algorithm": "Ed25519",
  "key_id": "ed25519:a11e26df37027a46",
  "signature": "qXyeZHgHm/ndqocSWnO6JluiLoxBp5jFhVcXM/24aK13ZMXrZBRgT65tYECS5NxsyVi7i+ercde6sMgGNYEsDQ=="
}
