//go:build nos3gateway

package media

// embeddedGateway: built with the tag nos3gateway, the binary leaves the
// embedded S3 gateway (versitygw) out and needs an S3 endpoint.
const embeddedGateway = false
