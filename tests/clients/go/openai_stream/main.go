// Command openai_stream sends streaming OpenAI chat completion requests over
// HTTPS (HTTP/2 when the server offers it) and prints one JSON line per
// request with the client's own time to first content.
//
// It waits for a line on stdin before the first request, so that a probe can
// attach to the running process first. Standard library only.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

type chunk struct {
	Choices []struct {
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

type result struct {
	Status           int    `json:"status"`
	Proto            string `json:"proto"`
	ClientTTFTUs     int64  `json:"client_ttft_us"`
	ContentEvents    int    `json:"content_events"`
	CompletionTokens int    `json:"completion_tokens"`
	Done             bool   `json:"done"`
}

func main() {
	baseURL := flag.String("url", "", "base URL such as https://localhost:8443/v1")
	caFile := flag.String("cafile", "", "PEM file of the CA that signed the server certificate")
	model := flag.String("model", "gpt-4o-mini", "model to request")
	requests := flag.Int("requests", 1, "number of sequential requests")
	flag.Parse()

	pem, err := os.ReadFile(*caFile)
	if err != nil {
		fail("read CA file: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		fail("no certificate in %s", *caFile)
	}
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
	}}

	bufio.NewReader(os.Stdin).ReadString('\n')
	for i := 0; i < *requests; i++ {
		out, err := json.Marshal(stream(client, *baseURL, *model))
		if err != nil {
			fail("encode result: %v", err)
		}
		fmt.Println(string(out))
	}
}

func stream(client *http.Client, baseURL, model string) result {
	body, _ := json.Marshal(map[string]any{
		"model":          model,
		"stream":         true,
		"stream_options": map[string]bool{"include_usage": true},
		"messages":       []map[string]string{{"role": "user", "content": "Say hello to the world"}},
	})
	request, err := http.NewRequest("POST", baseURL+"/chat/completions", bytes.NewReader(body))
	if err != nil {
		fail("build request: %v", err)
	}
	request.Header.Set("Content-Type", "application/json")
	request.Header.Set("Authorization", "Bearer test-key")

	start := time.Now()
	response, err := client.Do(request)
	if err != nil {
		fail("request: %v", err)
	}
	defer response.Body.Close()
	res := result{Status: response.StatusCode, Proto: response.Proto}
	scanner := bufio.NewScanner(response.Body)
	for scanner.Scan() {
		line := scanner.Text()
		if !strings.HasPrefix(line, "data: ") {
			continue
		}
		data := strings.TrimPrefix(line, "data: ")
		if data == "[DONE]" {
			res.Done = true
			continue
		}
		var c chunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			fail("decode chunk: %v", err)
		}
		if len(c.Choices) > 0 && c.Choices[0].Delta.Content != "" {
			if res.ContentEvents == 0 {
				res.ClientTTFTUs = time.Since(start).Microseconds()
			}
			res.ContentEvents++
		}
		if c.Usage != nil {
			res.CompletionTokens = c.Usage.CompletionTokens
		}
	}
	if err := scanner.Err(); err != nil {
		fail("read stream: %v", err)
	}
	return res
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "openai_stream: "+format+"\n", args...)
	os.Exit(1)
}
