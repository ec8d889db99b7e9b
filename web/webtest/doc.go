// Package webtest runs a whole sessiond API in a test: a runtime in a temp
// folder, the session service with the offline model, and the HTTP handler
// on an httptest server, all closed when the test ends.
package webtest
