# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_kubectl_llmslo_global_optspecs
    string join \n v/verbose h/help V/version
end

function __fish_kubectl_llmslo_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_kubectl_llmslo_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_kubectl_llmslo_using_subcommand
    set -l cmd (__fish_kubectl_llmslo_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_needs_command" -s v -l verbose -d 'Log verbosity: -v for progress details, -vv for debug logs (stderr)'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_needs_command" -s h -l help -d 'Print help'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_needs_command" -s V -l version -d 'Print version'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_needs_command" -f -a "diagnose" -d 'Probe a workload for a bounded window and report its LLM SLIs, SLOs and attribution verdicts'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_needs_command" -f -a "doctor" -d 'Check on each target node what the probe can measure there'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_needs_command" -f -a "cleanup" -d 'Delete probe Jobs left behind by interrupted runs'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_needs_command" -f -a "version" -d 'Print the client version, the default probe image and the result schema version'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_needs_command" -f -a "completion" -d 'Print a shell completion script'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -s l -l selector -d 'Probe the pods that match this label selector (for example app=chat,tier!=batch)' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -s c -l container -d 'Probe only this container of each pod (default: every container)' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l kubeconfig -d 'Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)' -r -F
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l context -d 'Kubeconfig context to use (default: the current context)' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -s n -l namespace -d 'Namespace of the target (default: the context\'s namespace)' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l probe-namespace -d 'Namespace that holds the probe Jobs' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l probe-image -d 'Probe container image (default: the llmslo probe image of this CLI\'s version). Mirror it and set this flag in air-gapped clusters' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l seccomp-profile -d 'Run the probe with this Localhost seccomp profile (a path relative to the kubelet\'s seccomp directory) instead of Unconfined. The profile must allow bpf() and perf_event_open()' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l start-timeout -d 'How long to wait for probe pods to be scheduled and start, on top of the collection window' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -s d -l duration -d 'Length of the collection window (for example 30s, 2m)' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l pid -d 'With --local: process id to probe; repeat for several processes. Children they start during the window are probed too' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l probe-binary -d 'With --local: path of the llmslo-probe binary (default: next to this binary, then on PATH)' -r -F
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l slo -d 'SLO to evaluate, as [SCOPE/]SLI.STATISTIC OP TARGET. OP is <=, >=, or = for "at most" (but "at least" for tokens_per_sec). SCOPE is inbound/ or outbound/ (default: the requests the report measures). Repeat for several. Examples: ttft.p95=800ms, e2e.p99<=8s, error_rate=1%, tokens_per_sec.p50>=20, outbound/ttft.p95=500ms' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l slo-file -d 'OpenSLO v1 file with SLOs to evaluate, in addition to --slo' -r -F
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l baseline -d 'Compare with a run saved earlier with --save-baseline (NAME, or "latest")' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l save-baseline -d 'Save this run as a baseline under NAME in the user\'s data directory' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l component -d 'Rule that assigns outbound calls to a component, as COMPONENT=MATCH where MATCH is host[:port][/path-prefix], for example guardrail=policy.internal:8181/v1/data; repeat for several' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l provider -d 'Rule that names a private LLM gateway, as PROVIDER=host[:port][/path], for example openai=llm-gateway.internal/v1; repeat for several' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l ring-buffer-mib -d 'Size of each probe\'s kernel ring buffer, in MiB: a power of two from 1 to 256 (the probe\'s default is 8). Raise it when the report shows events lost to a full ring buffer' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l otlp-endpoint -d 'Export one span per LLM call and GenAI metrics to this OTLP endpoint (for example http://collector:4318 or grpc://collector:4317)' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l otlp-header -d 'Header sent with every OTLP export, as KEY=VALUE; repeat for several' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l otlp-ca -d 'CA certificate (PEM) that signs the OTLP endpoint\'s certificate, trusted in addition to the system\'s CAs' -r -F
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l otlp-protocol -d 'OTLP transport (default: grpc for grpc:// and grpcs:// endpoints and for port 4317, otherwise http/protobuf)' -r -f -a "grpc\t'OTLP/gRPC (collector port 4317)'
http/protobuf\t'OTLP/HTTP with binary protobuf bodies (collector port 4318)'"
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l otlp-timeout -d 'Longest time the OTLP export may take (for example 10s); after it the export is abandoned with a warning and the report is printed' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l otlp-mode -d 'Which calls get OTLP spans and metric points when the application already traces them itself (docs/opentelemetry.md)' -r -f -a "all\t'Every call; spans that repeat an application span carry llmslo.duplicate_of_app_span=true'
uninstrumented-only\t'Only calls that no application span covers'
enrich\t'Calls an application span covers get an INTERNAL child span with llmslo.* timings only, and no metric point'"
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l save-results -d 'Also write the raw collection (each node\'s probe result or failure, and the probed containers) as JSON to PATH' -r -F
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -s o -l output -d 'Output format' -r -f -a "table\t'Tables for people'
wide\t'Tables with every column'
json\t'The report as JSON (stable; see docs/output.md)'
yaml\t'The report as YAML'"
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -s A -l all-namespaces -d 'With --selector: look for pods in every namespace'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l privileged -d 'Run the probe as a privileged container instead of with only CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE. Use it where those are not enough, for example on kernels older than 5.8'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l dry-run -d 'Print the probe Jobs that would be created and exit without creating anything. Use with -o yaml or -o json'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l local -d 'Probe processes on this host instead of a cluster (needs root or CAP_BPF and CAP_PERFMON). Use with --pid'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -l otlp-insecure -d 'Send OTLP without TLS to an endpoint given as HOST:PORT without a scheme. Endpoints written with http:// or grpc:// never use TLS'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -s v -l verbose -d 'Log verbosity: -v for progress details, -vv for debug logs (stderr)'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand diagnose" -s V -l version -d 'Print version'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand doctor" -s l -l selector -d 'Probe the pods that match this label selector (for example app=chat,tier!=batch)' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand doctor" -s c -l container -d 'Probe only this container of each pod (default: every container)' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand doctor" -l kubeconfig -d 'Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)' -r -F
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand doctor" -l context -d 'Kubeconfig context to use (default: the current context)' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand doctor" -s n -l namespace -d 'Namespace of the target (default: the context\'s namespace)' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand doctor" -l probe-namespace -d 'Namespace that holds the probe Jobs' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand doctor" -l probe-image -d 'Probe container image (default: the llmslo probe image of this CLI\'s version). Mirror it and set this flag in air-gapped clusters' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand doctor" -l seccomp-profile -d 'Run the probe with this Localhost seccomp profile (a path relative to the kubelet\'s seccomp directory) instead of Unconfined. The profile must allow bpf() and perf_event_open()' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand doctor" -l start-timeout -d 'How long to wait for probe pods to be scheduled and start, on top of the collection window' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand doctor" -l probe-binary -d 'With --local: path of the llmslo-probe binary' -r -F
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand doctor" -s o -l output -d 'Output format' -r -f -a "table\t'Tables for people'
wide\t'Tables with every column'
json\t'The report as JSON (stable; see docs/output.md)'
yaml\t'The report as YAML'"
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand doctor" -s A -l all-namespaces -d 'With --selector: look for pods in every namespace'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand doctor" -l privileged -d 'Run the probe as a privileged container instead of with only CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE. Use it where those are not enough, for example on kernels older than 5.8'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand doctor" -l dry-run -d 'Print the probe Jobs that would be created and exit without creating anything. Use with -o yaml or -o json'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand doctor" -l local -d 'Check this host instead of a cluster'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand doctor" -s v -l verbose -d 'Log verbosity: -v for progress details, -vv for debug logs (stderr)'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand doctor" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand doctor" -s V -l version -d 'Print version'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand cleanup" -l kubeconfig -d 'Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)' -r -F
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand cleanup" -l context -d 'Kubeconfig context to use (default: the current context)' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand cleanup" -s n -l namespace -d 'Namespace of the target (default: the context\'s namespace)' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand cleanup" -l probe-namespace -d 'Namespace that holds the probe Jobs' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand cleanup" -l run-id -d 'Remove only the Jobs of this run id (default: every llmslo Job)' -r
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand cleanup" -l dry-run -d 'List what would be deleted without deleting it'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand cleanup" -s v -l verbose -d 'Log verbosity: -v for progress details, -vv for debug logs (stderr)'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand cleanup" -s h -l help -d 'Print help'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand cleanup" -s V -l version -d 'Print version'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand version" -s o -l output -d 'Output format' -r -f -a "table\t'Tables for people'
wide\t'Tables with every column'
json\t'The report as JSON (stable; see docs/output.md)'
yaml\t'The report as YAML'"
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand version" -s v -l verbose -d 'Log verbosity: -v for progress details, -vv for debug logs (stderr)'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand version" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand version" -s V -l version -d 'Print version'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand completion" -s v -l verbose -d 'Log verbosity: -v for progress details, -vv for debug logs (stderr)'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand completion" -s h -l help -d 'Print help'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand completion" -s V -l version -d 'Print version'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand help; and not __fish_seen_subcommand_from diagnose doctor cleanup version completion help" -f -a "diagnose" -d 'Probe a workload for a bounded window and report its LLM SLIs, SLOs and attribution verdicts'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand help; and not __fish_seen_subcommand_from diagnose doctor cleanup version completion help" -f -a "doctor" -d 'Check on each target node what the probe can measure there'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand help; and not __fish_seen_subcommand_from diagnose doctor cleanup version completion help" -f -a "cleanup" -d 'Delete probe Jobs left behind by interrupted runs'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand help; and not __fish_seen_subcommand_from diagnose doctor cleanup version completion help" -f -a "version" -d 'Print the client version, the default probe image and the result schema version'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand help; and not __fish_seen_subcommand_from diagnose doctor cleanup version completion help" -f -a "completion" -d 'Print a shell completion script'
complete -c kubectl-llmslo -n "__fish_kubectl_llmslo_using_subcommand help; and not __fish_seen_subcommand_from diagnose doctor cleanup version completion help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
