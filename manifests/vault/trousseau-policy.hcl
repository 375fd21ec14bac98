# The only capabilities trousseau needs. No `create` on encrypt: with it, a typo in the key
# name would silently create a new transit key (Transit's upsert) instead of failing.
path "transit/encrypt/kubernetes" {
  capabilities = ["update"]
}
path "transit/decrypt/kubernetes" {
  capabilities = ["update"]
}
path "transit/keys/kubernetes" {
  capabilities = ["read"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
# Lets `trousseau doctor` ask which capabilities this token has (it reveals only the token's own
# capabilities). The plugin itself never calls it.
path "sys/capabilities-self" {
  capabilities = ["update"]
}
