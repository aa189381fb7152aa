"""`portmapctl add`'s options by name, for the parsers that run before typer.

Name -> (parameter, kind). Kinds: "flag", "value", "many" (repeatable), "int", or
"choice" (an Enum option: its values are cli/_common.py's and cli/output.py's, which
cli/add_fast.py puts in). The same names as cli/add.py and cli/_options.py declare for typer.

Nothing is imported here: ops/add_early.py reads an add command line with this table
as the process starts, before it forks the shadow warning's dump, and everything it
imports first delays that child.
"""

OPTIONS = {
    "--network": ("network", "value"),
    "--container": ("container", "value"),
    "--ip": ("ip", "many"),
    "--publish": ("publish", "many"),
    "-p": ("publish", "many"),
    "--no-snat": ("no_snat", "flag"),
    "--masq-all": ("masq_all", "flag"),
    "--mark-bit": ("mark_bit", "int"),
    "--external-setmark-chain": ("external_setmark_chain", "value"),
    "--conditions-v4": ("conditions_v4", "many"),
    "--conditions-v6": ("conditions_v6", "many"),
    "--cni-config": ("cni_config", "value"),
    "--ifname": ("ifname", "value"),
    "--no-flush-udp": ("no_flush_udp", "flag"),
    "--dry-run": ("dry_run", "flag"),
    "--backend": ("backend", "choice"),
    "--iptables": ("iptables", "choice"),
    "--family": ("family", "choice"),
    "--netns": ("netns", "value"),
    "--cni-cache-dir": ("cni_cache_dir", "many"),
    "--cni-bin-dir": ("cni_bin_dir", "many"),
    "--output": ("output", "choice"),
    "-o": ("output", "choice"),
    "--no-headers": ("no_headers", "flag"),
    "--no-trunc": ("no_trunc", "flag"),
    "--no-color": ("no_color", "flag"),
    "--quiet": ("quiet", "flag"),
    "-q": ("quiet", "flag"),
    "--verbose": ("verbose", "flag"),
    "-v": ("verbose", "flag"),
}
