{
  "algorithm": "Ed25519",
  "key_id": "ed25519:a11e26df37027a46",
  "signature": "GDK6zutLODq9y/8KC/EBYsfCFkQfITqQWj948yQH07cxKZDvGM6XTWb6CSczdK6Tf4XjTzk5aW26OobC7X/kBA=="
}
