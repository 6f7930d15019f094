"""The `karta-admission` command: its arguments, and which module runs each command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from webhook import __version__
from webhook.cli.exits import Exit
from webhook.config import Config, ConfigError, load_config
from webhook.evaluation import Mode
from webhook.karta.parse import DefinitionError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits with 2 too; this only adds the hint to the help.
        self.print_usage(sys.stderr)
        self.exit(Exit.ERROR, f"{self.prog}: error: {message}\nTry '{self.prog} --help'.\n")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="configuration file (docs/configuration.md)")
    parser.add_argument(
        "--definitions",
        type=Path,
        metavar="DIR",
        action="append",
        default=[],
        help="directory of extra Karta definitions; replaces the built-in one for the same root kind (repeatable)",
    )
    parser.add_argument("--mode", choices=[m.value for m in Mode], help="override the configured mode")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="karta-admission",
        description="Admission webhook enforcing Karta-derived policy and gang scheduling on KubeRay workloads.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    serve = commands.add_parser("serve", help="serve the webhook over TLS (gunicorn)")
    serve.add_argument("--bind", default="127.0.0.1:8443", metavar="HOST:PORT", help="default: %(default)s")
    serve.add_argument("--certfile", type=Path, metavar="FILE", help="serving certificate (PEM)")
    serve.add_argument("--keyfile", type=Path, metavar="FILE", help="private key of the certificate (PEM)")
    serve.add_argument("--workers", type=int, default=2, metavar="N", help="gunicorn worker processes (%(default)s)")
    serve.add_argument("--threads", type=int, default=4, metavar="N", help="threads per worker (%(default)s)")
    serve.add_argument(
        "--agent",
        choices=["auto", "spawn", "external", "none"],
        default="auto",
        help="the cluster agent, the one process that talks to the Kubernetes API: spawn it (auto: when a "
        "cluster is configured, in-cluster or by kubeconfig), use one started apart (external, with --state), "
        "or none (default: %(default)s)",
    )
    serve.add_argument(
        "--state",
        type=Path,
        metavar="DIR",
        help="where the cluster agent publishes its state (default: a new temp dir)",
    )
    serve.add_argument(
        "--no-cluster",
        action="store_true",
        help="do not talk to a Kubernetes API (the same as --agent none: no Karta watch, owners, certificates)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _common(serve)

    agent = commands.add_parser(
        "agent",
        help="the process that talks to the Kubernetes API for a server (serve starts it; see docs/architecture.md)",
        description="Watch Karta definitions and the owners of Ray pods, keep the self-managed certificates "
        "and, on the replica that holds the Lease, the gang group objects and the periodic audit; publish what "
        "the server's workers need in a state file under --state.",
    )
    agent.add_argument("--state", type=Path, required=True, metavar="DIR", help="where to publish the state")
    agent.add_argument("--kubeconfig", type=Path, metavar="FILE", help="default: in-cluster, then ~/.kube/config")
    agent.add_argument("--context", metavar="NAME", help="kubeconfig context")
    agent.add_argument("--parent-pid", type=int, metavar="PID", help="stop when this process is gone (serve sets it)")
    agent.add_argument(
        "--server-url", metavar="URL", help="the /readyz of the server beside it: webhooks are armed once it answers"
    )
    agent.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _common(agent)

    check = commands.add_parser(
        "check",
        help="check manifests offline; exit 0 if nothing would be denied, 1 if something would, 2 on errors",
        description="Check Kubernetes manifests against the policy, as the webhook would at admission. "
        "CRD defaults are applied first, as the API server does. Documents of kinds no definition covers "
        "are skipped; finding none at all is an error unless --allow-empty. Exit status: 0 nothing would be "
        "denied, 1 something would be denied, 2 usage or input errors (unreadable, hostile or malformed files).",
    )
    check.add_argument(
        "files", nargs="+", metavar="FILE", help="YAML or JSON files, several documents each; - reads stdin"
    )
    check.add_argument("-o", "--output", choices=["text", "json"], default="text")
    check.add_argument("-v", "--verbose", action="store_true", help="also list the skipped documents")
    check.add_argument(
        "--allow-empty",
        action="store_true",
        help="exit 0 when no object of a kind with a definition was found (otherwise that is an error, exit 2)",
    )
    check.add_argument(
        "--crd",
        type=Path,
        metavar="FILE",
        action="append",
        default=[],
        help="CRD whose schema defaults to apply (KubeRay's are built in; repeatable)",
    )
    _common(check)

    gang = commands.add_parser(
        "gang",
        help="preview gang scheduling offline: group objects and pod keys per Ray cluster; exit 0, 2 on errors",
        description="For each RayCluster in the files (a RayService or RayJob yields the RayCluster KubeRay "
        "would create), show the group object the server's controller would create and the keys, "
        "schedulerName and pod count of each group of pods, with the server's own code. CRD defaults are "
        "applied first, as the API server does. Assumes a cluster where the scheduler's CRD is installed. "
        "Exit status: 0, or 2 on usage or read errors.",
    )
    gang.add_argument(
        "files", nargs="+", metavar="FILE", help="YAML or JSON files, several documents each; - reads stdin"
    )
    gang.add_argument("-o", "--output", choices=["text", "json"], default="text")
    gang.add_argument(
        "--scheduler",
        choices=["coscheduling", "volcano", "kueue", "kai", "yunikorn", "custom", "none"],
        help="override gang.scheduler of the configuration",
    )
    gang.add_argument("--config", type=Path, metavar="FILE", help="configuration file (docs/configuration.md)")
    gang.add_argument(
        "--definitions", type=Path, metavar="DIR", action="append", default=[],
        help="directory of extra Karta definitions (repeatable)",
    )  # fmt: skip

    audit = commands.add_parser(
        "audit",
        help="check the Ray objects already in a cluster; exit codes as for check",
        description="List the objects of every kind with a definition in the cluster and check them. "
        "Finds what was admitted before the webhook existed.",
    )
    audit.add_argument("-o", "--output", choices=["text", "json"], default="text")
    audit.add_argument("-n", "--namespace", action="append", default=[], metavar="NS", help="only these (repeatable)")
    audit.add_argument("--policy-reports", action="store_true", help="write wgpolicyk8s.io PolicyReports")
    audit.add_argument("--kubeconfig", type=Path, metavar="FILE", help="default: in-cluster, then ~/.kube/config")
    audit.add_argument("--context", metavar="NAME", help="kubeconfig context")
    _common(audit)

    certs = commands.add_parser("certs", help="make a CA and a serving certificate for development or tests")
    certs.add_argument("--out", type=Path, required=True, metavar="DIR")
    certs.add_argument("--dns", action="append", default=[], metavar="NAME", required=True, help="DNS SAN (repeatable)")
    certs.add_argument("--ip", action="append", default=[], metavar="ADDR", help="IP SAN (repeatable)")
    certs.add_argument("--days", type=int, default=365, metavar="N", help="validity (%(default)s days)")

    commands.add_parser("rules", help="list the policy rules with their ids and default severities")

    exporter = commands.add_parser(
        "export",
        help="export the policy for another enforcement point: `export vap` (ValidatingAdmissionPolicy)",
        description="Compile the Karta definitions and the policy rules in force into ValidatingAdmissionPolicies "
        "and bindings (admissionregistration.k8s.io/v1, Kubernetes 1.30+): one pair of policies per definition "
        "(deny and warn rules), bindings per namespace mode. Rules that cannot be expressed in CEL are listed in "
        "the output, never dropped silently (docs/vap.md). Exit status: 0, or 2 on errors.",
    )
    exporter.add_argument("target", choices=["vap"], help="what to export (vap: ValidatingAdmissionPolicy)")
    exporter.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    exporter.add_argument(
        "--exclude-namespace", action="append", default=[], metavar="NS",
        help="namespace the bindings never select, besides kube-system (repeatable; e.g. the webhook's own)",
    )  # fmt: skip
    exporter.add_argument("--config", type=Path, metavar="FILE", help="configuration file (docs/configuration.md)")
    exporter.add_argument(
        "--definitions", type=Path, metavar="DIR", action="append", default=[],
        help="directory of extra Karta definitions (repeatable)",
    )  # fmt: skip
    exporter.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        help="override the configured global mode (namespace labels still apply)",
    )

    definitions = commands.add_parser("definitions", help="validate and list the Karta definitions in force")
    definitions.add_argument("files", nargs="*", metavar="FILE", help="validate these Karta files instead")
    _common(definitions)
    return parser


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    return config.with_overrides(mode=getattr(args, "mode", None), definition_directories=list(args.definitions))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            # Before anything loads prometheus_client, which picks its multi-process mode at import.
            from webhook.observability.multiprocess import prepare_directory

            prepare_directory()
            from webhook.cli.serve import serve_command

            return serve_command(args, _config(args))
        if args.command == "agent":
            # Before anything loads prometheus_client: the agent's samples join the server's.
            from webhook.observability.multiprocess import prepare_directory

            prepare_directory(keep_samples=True)
            from webhook.cli.agent import agent_command

            return agent_command(args, _config(args))
        if args.command == "check":
            from webhook.cli.check import check_command

            return check_command(args, _config(args))
        if args.command == "gang":
            from webhook.cli.gang import gang_command

            return gang_command(args, _config(args))
        if args.command == "audit":
            from webhook.cli.audit import audit_command

            return audit_command(args, _config(args))
        if args.command == "export":
            from webhook.cli.export import export_command

            return export_command(args, _config(args))
        if args.command == "certs":
            from webhook.cli.certs import run_certs_command

            return run_certs_command(args.out, list(args.dns), list(args.ip), args.days)
        if args.command == "rules":
            from webhook.cli.catalog import rules_command

            return rules_command()
        if args.command == "definitions":
            from webhook.cli.catalog import definitions_command

            return definitions_command(args, _config(args))
    except (ConfigError, DefinitionError) as exc:
        print(f"karta-admission: {exc}", file=sys.stderr)
        return Exit.ERROR
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    raise AssertionError(f"unhandled command {args.command}")
