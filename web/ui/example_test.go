package ui_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"sessiond/web/ui"
)

// The UI is mounted under everything that is not the API; this shows what
// it answers on its own.
func ExampleHandler() {
	srv := httptest.NewServer(ui.Handler())
	defer srv.Close()
	for _, p := range []string{"/", "/s/01JD0000000000000000000000", "/static/sessiond-client.js", "/v1/sessions"} {
		res, err := http.Get(srv.URL + p)
		if err != nil {
			fmt.Println(err)
			return
		}
		res.Body.Close()
		fmt.Println(p, res.StatusCode, res.Header.Get("Content-Type"))
	}
	// Output:
	// / 200 text/html; charset=utf-8
	// /s/01JD0000000000000000000000 200 text/html; charset=utf-8
	// /static/sessiond-client.js 200 text/javascript; charset=utf-8
	// /v1/sessions 404 text/plain; charset=utf-8
}
