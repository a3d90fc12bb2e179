{
  "algorithm": "Ed25519",
  "key_id": "ed25519:a11e26df37027a46",
  "signature": "d56pIWXbV/dVMK6mAUAKgVFryCH+4nHVBzoPlXmCik6j1Q6tR/mxyJjtpMr5r8t/+mJaqE5Us5KmmLug1UAjBA=="
}
