"""`gc`: remove the chains of containers that are not live, safely enough for cron.

What is live comes from any mix of sources (SPEC §3; read and merged in
liveness.py):
- libcni's cache: an attachment (network + container ID) is live, so are its
  CNI-DN-/CNI-SN- chain names;
- a CNI GC `cni.dev/valid-attachments` document: a network config holding the key
  (its `name` gives the network, so the chain names are known exactly) or a bare list
  (container IDs only: matched against the IDs the entry rules' comments name);
- `--keep ID`: an ID, or a prefix of the IDs the comments name.
A chain is matched by its name wherever possible, since a comment cut at 255 bytes
loses the end of a long ID: every (network seen, live ID) pair gives the names its
chains would have.

A network-config document speaks for its own network only: when it is the only kind of
source, chains of other networks (or of no network the comments name) are kept. The
cache, a bare list, `--keep` alone and `--all` speak for every network.

A chain that is not live is removed only once it has been seen not live and unchanged
for `min_age` (state.py keeps the first sightings): an ADD in progress has its chain
in place before libcni writes the cache entry. `plan_gc` reads the node once (every
table, then the cache) and plans; `apply_gc` applies that plan, per family one
transaction (planner.plan_teardown) through Node.converge, which re-reads and re-plans
a family whose table the plugin changed meanwhile (an interactive run asks in between). Afterwards, the UDP conntrack entries of host
ports no longer mapped go (the plugin's DEL leaves them; their flows would keep a
dead DNAT until idle).

The modules, by job:
- `liveness.py`: the sources of liveness, merged into one Liveness;
- `state.py`: the sightings --min-age counts from (/run/portmapctl/gc-state.json);
- `family.py`: one family's plan from its table (pure: FamilyPlan, plan_family);
- `planning.py`: what planning one family from a read takes (Planning, plan_table);
- `plan.py`: a whole run planned from one read of the node (GcPlan, plan_gc);
- `converge.py`: applying one family: its re-plans while the table changes, a tool
  that died or hung judged by a read, a refused removal halved (converge_family,
  settle_family);
- `nft.py`: the nftables backend's side of the plan and its apply;
- `apply.py`: applying a plan (apply_gc; gc plans and applies);
- `udp.py`: the UDP conntrack entries the removal leaves pointing nowhere;
- `result.py`: what gc reports (GcChain, GcResult).
"""

from portmapctl.ops.gc.apply import Progress, apply_gc, gc
from portmapctl.ops.gc.family import FamilyPlan, fingerprint, plan_family
from portmapctl.ops.gc.liveness import (
    VALID_ATTACHMENTS_KEY,
    AnyChain,
    Liveness,
    Sources,
    ValidAttachments,
    empty_cache_refusal,
    liveness,
    parse_valid_attachments,
    read_valid_attachments,
    require_namespaces,
    require_source,
    says_nothing,
)
from portmapctl.ops.gc.plan import Applied, GcPlan, plan_gc
from portmapctl.ops.gc.planning import DEFAULT_MIN_AGE, GcOptions, read_cache_while_planning
from portmapctl.ops.gc.result import GcChain, GcResult
from portmapctl.ops.gc.udp import flush_udp_after

__all__ = [
    "DEFAULT_MIN_AGE",
    "VALID_ATTACHMENTS_KEY",
    "AnyChain",
    "Applied",
    "FamilyPlan",
    "GcChain",
    "GcOptions",
    "GcPlan",
    "GcResult",
    "Liveness",
    "Progress",
    "Sources",
    "ValidAttachments",
    "apply_gc",
    "empty_cache_refusal",
    "fingerprint",
    "flush_udp_after",
    "gc",
    "liveness",
    "parse_valid_attachments",
    "plan_family",
    "plan_gc",
    "read_cache_while_planning",
    "read_valid_attachments",
    "require_namespaces",
    "require_source",
    "says_nothing",
]
