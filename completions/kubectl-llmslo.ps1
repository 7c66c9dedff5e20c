
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'kubectl-llmslo' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'kubectl-llmslo'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'kubectl-llmslo' {
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log verbosity: -v for progress details, -vv for debug logs (stderr)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log verbosity: -v for progress details, -vv for debug logs (stderr)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('diagnose', 'diagnose', [CompletionResultType]::ParameterValue, 'Probe a workload for a bounded window and report its LLM SLIs, SLOs and attribution verdicts')
            [CompletionResult]::new('doctor', 'doctor', [CompletionResultType]::ParameterValue, 'Check on each target node what the probe can measure there')
            [CompletionResult]::new('cleanup', 'cleanup', [CompletionResultType]::ParameterValue, 'Delete probe Jobs left behind by interrupted runs')
            [CompletionResult]::new('version', 'version', [CompletionResultType]::ParameterValue, 'Print the client version, the default probe image and the result schema version')
            [CompletionResult]::new('completion', 'completion', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'kubectl-llmslo;diagnose' {
            [CompletionResult]::new('-l', '-l', [CompletionResultType]::ParameterName, 'Probe the pods that match this label selector (for example app=chat,tier!=batch)')
            [CompletionResult]::new('--selector', '--selector', [CompletionResultType]::ParameterName, 'Probe the pods that match this label selector (for example app=chat,tier!=batch)')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Probe only this container of each pod (default: every container)')
            [CompletionResult]::new('--container', '--container', [CompletionResultType]::ParameterName, 'Probe only this container of each pod (default: every container)')
            [CompletionResult]::new('--kubeconfig', '--kubeconfig', [CompletionResultType]::ParameterName, 'Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)')
            [CompletionResult]::new('--context', '--context', [CompletionResultType]::ParameterName, 'Kubeconfig context to use (default: the current context)')
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Namespace of the target (default: the context''s namespace)')
            [CompletionResult]::new('--namespace', '--namespace', [CompletionResultType]::ParameterName, 'Namespace of the target (default: the context''s namespace)')
            [CompletionResult]::new('--probe-namespace', '--probe-namespace', [CompletionResultType]::ParameterName, 'Namespace that holds the probe Jobs')
            [CompletionResult]::new('--probe-image', '--probe-image', [CompletionResultType]::ParameterName, 'Probe container image (default: the llmslo probe image of this CLI''s version). Mirror it and set this flag in air-gapped clusters')
            [CompletionResult]::new('--seccomp-profile', '--seccomp-profile', [CompletionResultType]::ParameterName, 'Run the probe with this Localhost seccomp profile (a path relative to the kubelet''s seccomp directory) instead of Unconfined. The profile must allow bpf() and perf_event_open()')
            [CompletionResult]::new('--start-timeout', '--start-timeout', [CompletionResultType]::ParameterName, 'How long to wait for probe pods to be scheduled and start, on top of the collection window')
            [CompletionResult]::new('-d', '-d', [CompletionResultType]::ParameterName, 'Length of the collection window (for example 30s, 2m)')
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'Length of the collection window (for example 30s, 2m)')
            [CompletionResult]::new('--pid', '--pid', [CompletionResultType]::ParameterName, 'With --local: process id to probe; repeat for several processes. Children they start during the window are probed too')
            [CompletionResult]::new('--probe-binary', '--probe-binary', [CompletionResultType]::ParameterName, 'With --local: path of the llmslo-probe binary (default: next to this binary, then on PATH)')
            [CompletionResult]::new('--slo', '--slo', [CompletionResultType]::ParameterName, 'SLO to evaluate, as [SCOPE/]SLI.STATISTIC OP TARGET. OP is <=, >=, or = for "at most" (but "at least" for tokens_per_sec). SCOPE is inbound/ or outbound/ (default: the requests the report measures). Repeat for several. Examples: ttft.p95=800ms, e2e.p99<=8s, error_rate=1%, tokens_per_sec.p50>=20, outbound/ttft.p95=500ms')
            [CompletionResult]::new('--slo-file', '--slo-file', [CompletionResultType]::ParameterName, 'OpenSLO v1 file with SLOs to evaluate, in addition to --slo')
            [CompletionResult]::new('--baseline', '--baseline', [CompletionResultType]::ParameterName, 'Compare with a run saved earlier with --save-baseline (NAME, or "latest")')
            [CompletionResult]::new('--save-baseline', '--save-baseline', [CompletionResultType]::ParameterName, 'Save this run as a baseline under NAME in the user''s data directory')
            [CompletionResult]::new('--component', '--component', [CompletionResultType]::ParameterName, 'Rule that assigns outbound calls to a component, as COMPONENT=MATCH where MATCH is host[:port][/path-prefix], for example guardrail=policy.internal:8181/v1/data; repeat for several')
            [CompletionResult]::new('--provider', '--provider', [CompletionResultType]::ParameterName, 'Rule that names a private LLM gateway, as PROVIDER=host[:port][/path], for example openai=llm-gateway.internal/v1; repeat for several')
            [CompletionResult]::new('--ring-buffer-mib', '--ring-buffer-mib', [CompletionResultType]::ParameterName, 'Size of each probe''s kernel ring buffer, in MiB: a power of two from 1 to 256 (the probe''s default is 8). Raise it when the report shows events lost to a full ring buffer')
            [CompletionResult]::new('--otlp-endpoint', '--otlp-endpoint', [CompletionResultType]::ParameterName, 'Export one span per LLM call and GenAI metrics to this OTLP endpoint (for example http://collector:4318 or grpc://collector:4317)')
            [CompletionResult]::new('--otlp-header', '--otlp-header', [CompletionResultType]::ParameterName, 'Header sent with every OTLP export, as KEY=VALUE; repeat for several')
            [CompletionResult]::new('--otlp-ca', '--otlp-ca', [CompletionResultType]::ParameterName, 'CA certificate (PEM) that signs the OTLP endpoint''s certificate, trusted in addition to the system''s CAs')
            [CompletionResult]::new('--otlp-protocol', '--otlp-protocol', [CompletionResultType]::ParameterName, 'OTLP transport (default: grpc for grpc:// and grpcs:// endpoints and for port 4317, otherwise http/protobuf)')
            [CompletionResult]::new('--otlp-timeout', '--otlp-timeout', [CompletionResultType]::ParameterName, 'Longest time the OTLP export may take (for example 10s); after it the export is abandoned with a warning and the report is printed')
            [CompletionResult]::new('--otlp-mode', '--otlp-mode', [CompletionResultType]::ParameterName, 'Which calls get OTLP spans and metric points when the application already traces them itself (docs/opentelemetry.md)')
            [CompletionResult]::new('--save-results', '--save-results', [CompletionResultType]::ParameterName, 'Also write the raw collection (each node''s probe result or failure, and the probed containers) as JSON to PATH')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-A', '-A ', [CompletionResultType]::ParameterName, 'With --selector: look for pods in every namespace')
            [CompletionResult]::new('--all-namespaces', '--all-namespaces', [CompletionResultType]::ParameterName, 'With --selector: look for pods in every namespace')
            [CompletionResult]::new('--privileged', '--privileged', [CompletionResultType]::ParameterName, 'Run the probe as a privileged container instead of with only CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE. Use it where those are not enough, for example on kernels older than 5.8')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Print the probe Jobs that would be created and exit without creating anything. Use with -o yaml or -o json')
            [CompletionResult]::new('--local', '--local', [CompletionResultType]::ParameterName, 'Probe processes on this host instead of a cluster (needs root or CAP_BPF and CAP_PERFMON). Use with --pid')
            [CompletionResult]::new('--otlp-insecure', '--otlp-insecure', [CompletionResultType]::ParameterName, 'Send OTLP without TLS to an endpoint given as HOST:PORT without a scheme. Endpoints written with http:// or grpc:// never use TLS')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log verbosity: -v for progress details, -vv for debug logs (stderr)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log verbosity: -v for progress details, -vv for debug logs (stderr)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'kubectl-llmslo;doctor' {
            [CompletionResult]::new('-l', '-l', [CompletionResultType]::ParameterName, 'Probe the pods that match this label selector (for example app=chat,tier!=batch)')
            [CompletionResult]::new('--selector', '--selector', [CompletionResultType]::ParameterName, 'Probe the pods that match this label selector (for example app=chat,tier!=batch)')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Probe only this container of each pod (default: every container)')
            [CompletionResult]::new('--container', '--container', [CompletionResultType]::ParameterName, 'Probe only this container of each pod (default: every container)')
            [CompletionResult]::new('--kubeconfig', '--kubeconfig', [CompletionResultType]::ParameterName, 'Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)')
            [CompletionResult]::new('--context', '--context', [CompletionResultType]::ParameterName, 'Kubeconfig context to use (default: the current context)')
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Namespace of the target (default: the context''s namespace)')
            [CompletionResult]::new('--namespace', '--namespace', [CompletionResultType]::ParameterName, 'Namespace of the target (default: the context''s namespace)')
            [CompletionResult]::new('--probe-namespace', '--probe-namespace', [CompletionResultType]::ParameterName, 'Namespace that holds the probe Jobs')
            [CompletionResult]::new('--probe-image', '--probe-image', [CompletionResultType]::ParameterName, 'Probe container image (default: the llmslo probe image of this CLI''s version). Mirror it and set this flag in air-gapped clusters')
            [CompletionResult]::new('--seccomp-profile', '--seccomp-profile', [CompletionResultType]::ParameterName, 'Run the probe with this Localhost seccomp profile (a path relative to the kubelet''s seccomp directory) instead of Unconfined. The profile must allow bpf() and perf_event_open()')
            [CompletionResult]::new('--start-timeout', '--start-timeout', [CompletionResultType]::ParameterName, 'How long to wait for probe pods to be scheduled and start, on top of the collection window')
            [CompletionResult]::new('--probe-binary', '--probe-binary', [CompletionResultType]::ParameterName, 'With --local: path of the llmslo-probe binary')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-A', '-A ', [CompletionResultType]::ParameterName, 'With --selector: look for pods in every namespace')
            [CompletionResult]::new('--all-namespaces', '--all-namespaces', [CompletionResultType]::ParameterName, 'With --selector: look for pods in every namespace')
            [CompletionResult]::new('--privileged', '--privileged', [CompletionResultType]::ParameterName, 'Run the probe as a privileged container instead of with only CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE. Use it where those are not enough, for example on kernels older than 5.8')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Print the probe Jobs that would be created and exit without creating anything. Use with -o yaml or -o json')
            [CompletionResult]::new('--local', '--local', [CompletionResultType]::ParameterName, 'Check this host instead of a cluster')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log verbosity: -v for progress details, -vv for debug logs (stderr)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log verbosity: -v for progress details, -vv for debug logs (stderr)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'kubectl-llmslo;cleanup' {
            [CompletionResult]::new('--kubeconfig', '--kubeconfig', [CompletionResultType]::ParameterName, 'Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)')
            [CompletionResult]::new('--context', '--context', [CompletionResultType]::ParameterName, 'Kubeconfig context to use (default: the current context)')
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Namespace of the target (default: the context''s namespace)')
            [CompletionResult]::new('--namespace', '--namespace', [CompletionResultType]::ParameterName, 'Namespace of the target (default: the context''s namespace)')
            [CompletionResult]::new('--probe-namespace', '--probe-namespace', [CompletionResultType]::ParameterName, 'Namespace that holds the probe Jobs')
            [CompletionResult]::new('--run-id', '--run-id', [CompletionResultType]::ParameterName, 'Remove only the Jobs of this run id (default: every llmslo Job)')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'List what would be deleted without deleting it')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log verbosity: -v for progress details, -vv for debug logs (stderr)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log verbosity: -v for progress details, -vv for debug logs (stderr)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'kubectl-llmslo;version' {
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log verbosity: -v for progress details, -vv for debug logs (stderr)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log verbosity: -v for progress details, -vv for debug logs (stderr)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'kubectl-llmslo;completion' {
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Log verbosity: -v for progress details, -vv for debug logs (stderr)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Log verbosity: -v for progress details, -vv for debug logs (stderr)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'kubectl-llmslo;help' {
            [CompletionResult]::new('diagnose', 'diagnose', [CompletionResultType]::ParameterValue, 'Probe a workload for a bounded window and report its LLM SLIs, SLOs and attribution verdicts')
            [CompletionResult]::new('doctor', 'doctor', [CompletionResultType]::ParameterValue, 'Check on each target node what the probe can measure there')
            [CompletionResult]::new('cleanup', 'cleanup', [CompletionResultType]::ParameterValue, 'Delete probe Jobs left behind by interrupted runs')
            [CompletionResult]::new('version', 'version', [CompletionResultType]::ParameterValue, 'Print the client version, the default probe image and the result schema version')
            [CompletionResult]::new('completion', 'completion', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'kubectl-llmslo;help;diagnose' {
            break
        }
        'kubectl-llmslo;help;doctor' {
            break
        }
        'kubectl-llmslo;help;cleanup' {
            break
        }
        'kubectl-llmslo;help;version' {
            break
        }
        'kubectl-llmslo;help;completion' {
            break
        }
        'kubectl-llmslo;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
