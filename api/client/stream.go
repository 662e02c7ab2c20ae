package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/pmgcm/pmgcm/api"
)

// Lists are read and printed as streams (issue 16): the daemon encodes one entry at a
// time, the client decodes one at a time and hands it on, so neither holds the whole
// answer. The bytes on the wire are those of the whole value encoded at once, so an older
// daemon or client on the other side reads them as before.

// ConfigListEach calls fn with each entry whose key starts with prefix, in key order, as
// it is decoded (GET api.PathConfigList, as ConfigList), and says how the read was served.
// An error of fn ends the list and is returned.
func (c *Client) ConfigListEach(ctx context.Context, prefix string, opts ReadOptions, fn func(api.ConfigEntry) error) (ReadInfo, error) {
	var q url.Values
	if prefix != "" {
		q = url.Values{"prefix": {prefix}}
	}
	resp, err := c.do(ctx, http.MethodGet, api.PathConfigList, opts.query(q), nil, "")
	if err != nil {
		return ReadInfo{}, err
	}
	defer resp.Body.Close()
	ri, err := readInfo(resp.Header)
	if err != nil {
		return ReadInfo{}, err
	}
	dec := json.NewDecoder(resp.Body)
	err = decodeObject(dec, func(key string) error {
		if key != "entries" {
			var skip json.RawMessage // a field a newer daemon added
			return dec.Decode(&skip)
		}
		return decodeArray(dec, func() error {
			var e api.ConfigEntry
			if err := dec.Decode(&e); err != nil {
				return err
			}
			return fn(e)
		})
	})
	if err != nil {
		return ReadInfo{}, fmt.Errorf("decoding answer of GET %s: %w", api.PathConfigList, err)
	}
	return ri, nil
}

// QuarantineListEach calls fn with each quarantined message, newest first, as it is
// decoded (GET api.PathQuarantine, filtered as QuarantineList).
func (c *Client) QuarantineListEach(ctx context.Context, from, to, state string, fn func(api.QuarantineMessage) error) error {
	q := url.Values{}
	for k, v := range map[string]string{"from": from, "to": to, "state": state} {
		if v != "" {
			q.Set(k, v)
		}
	}
	resp, err := c.do(ctx, http.MethodGet, api.PathQuarantine, q, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	err = decodeArray(dec, func() error {
		var m api.QuarantineMessage
		if err := dec.Decode(&m); err != nil {
			return err
		}
		return fn(m)
	})
	if err != nil {
		return fmt.Errorf("decoding answer of GET %s: %w", api.PathQuarantine, err)
	}
	return nil
}

// decodeArray reads a JSON array (null counts as empty), calling elem for each element;
// elem decodes it from dec.
func decodeArray(dec *json.Decoder, elem func() error) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		return nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return fmt.Errorf("want an array, got %v", tok)
	}
	for dec.More() {
		if err := elem(); err != nil {
			return err
		}
	}
	_, err = dec.Token() // ']'
	return err
}

// decodeObject reads a JSON object, calling field with each key; field decodes the value.
func decodeObject(dec *json.Decoder, field func(key string) error) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("want an object, got %v", tok)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("want a key, got %v", tok)
		}
		if err := field(key); err != nil {
			return err
		}
	}
	_, err = dec.Token() // '}'
	return err
}
