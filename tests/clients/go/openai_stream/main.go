// Command openai_stream sends streaming OpenAI chat completion requests over
// HTTPS (HTTP/2 when the server offers it) and logs the client's own timings
// in the format of tests/python/openai_client.py: one JSON line per request
// with CLOCK_MONOTONIC nanoseconds just before the request (start_ns), at
// the first chunk with non-empty content (first_content_ns) and when the
// response was consumed (end_ns).
//
// It prints "waiting" and reads a line from stdin before the first request,
// so that a probe can attach to the running process first. Requests run one
// after another on one connection. Standard library only.
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
	"syscall"
	"unsafe"
)

type chunk struct {
	Model   string `json:"model"`
	Choices []struct {
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

type record struct {
	Request          int    `json:"request"`
	Stream           bool   `json:"stream"`
	Proto            string `json:"proto"`
	StartNs          int64  `json:"start_ns"`
	FirstContentNs   int64  `json:"first_content_ns,omitempty"`
	EndNs            int64  `json:"end_ns"`
	ContentEvents    int    `json:"content_events"`
	PromptTokens     int    `json:"prompt_tokens,omitempty"`
	CompletionTokens int    `json:"completion_tokens,omitempty"`
	ResponseModel    string `json:"response_model,omitempty"`
}

const clockMonotonic = 1

// monotonicNs reads CLOCK_MONOTONIC, the clock of the probe and of the test
// server; Go's time package does not expose its absolute value.
func monotonicNs() int64 {
	var now syscall.Timespec
	_, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&now)), 0)
	if errno != 0 {
		fail("clock_gettime: %v", errno)
	}
	return now.Nano()
}

func main() {
	baseURL := flag.String("base-url", "", "base URL such as https://localhost:8443/v1")
	caFile := flag.String("cafile", "", "PEM file of the CA that signed the server certificate")
	logPath := flag.String("log", "", "file that receives one JSON line per request")
	model := flag.String("model", "gpt-4o-mini", "model to request")
	requests := flag.Int("requests", 1, "number of sequential requests")
	flag.Parse()
	if *baseURL == "" || *caFile == "" || *logPath == "" {
		fail("-base-url, -cafile and -log are required")
	}

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
	log, err := os.OpenFile(*logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		fail("open log: %v", err)
	}
	defer log.Close()

	fmt.Println("waiting")
	bufio.NewReader(os.Stdin).ReadString('\n')
	for index := 1; index <= *requests; index++ {
		line, err := json.Marshal(stream(client, *baseURL, *model, index))
		if err != nil {
			fail("encode record: %v", err)
		}
		if _, err := log.Write(append(line, '\n')); err != nil {
			fail("write log: %v", err)
		}
	}
}

func stream(client *http.Client, baseURL, model string, index int) record {
	body, _ := json.Marshal(map[string]any{
		"model":          model,
		"stream":         true,
		"stream_options": map[string]bool{"include_usage": true},
		"messages": []map[string]string{
			{"role": "user", "content": fmt.Sprintf("Say something, request %d.", index)},
		},
	})
	request, err := http.NewRequest("POST", baseURL+"/chat/completions", bytes.NewReader(body))
	if err != nil {
		fail("build request: %v", err)
	}
	request.Header.Set("Content-Type", "application/json")
	request.Header.Set("Authorization", "Bearer sk-llmslo-test")

	out := record{Request: index, Stream: true, StartNs: monotonicNs()}
	response, err := client.Do(request)
	if err != nil {
		fail("request %d: %v", index, err)
	}
	defer response.Body.Close()
	if response.StatusCode != http.StatusOK {
		fail("request %d: HTTP %d", index, response.StatusCode)
	}
	out.Proto = response.Proto
	scanner := bufio.NewScanner(response.Body)
	for scanner.Scan() {
		line := scanner.Text()
		if !strings.HasPrefix(line, "data: ") {
			continue
		}
		data := strings.TrimPrefix(line, "data: ")
		if data == "[DONE]" {
			continue
		}
		var c chunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			fail("decode chunk: %v", err)
		}
		if len(c.Choices) > 0 && c.Choices[0].Delta.Content != "" {
			if out.ContentEvents == 0 {
				out.FirstContentNs = monotonicNs()
			}
			out.ContentEvents++
		}
		if c.Usage != nil {
			out.PromptTokens = c.Usage.PromptTokens
			out.CompletionTokens = c.Usage.CompletionTokens
		}
		out.ResponseModel = c.Model
	}
	if err := scanner.Err(); err != nil {
		fail("read stream: %v", err)
	}
	out.EndNs = monotonicNs()
	return out
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "openai_stream: "+format+"\n", args...)
	os.Exit(1)
}
