{
  "algorithm": "Ed25519",
  "key_id": "ed25519:6e2b489ab35cfe11",
  "signature": "7uDwx+u2dxRlh3yXgMfyvZLBSsRy8Vtr90o8WtJZBVm3qsGO4U42wwmvMDOjo+JNGNWCo9k806+JlI++GdltBQ=="
}
