"""What libcni's result types refuse of a prevResult, as the plugin reads its stdin.

Before portmap looks at an address, libcni decodes prevResult into its Go result type
(types/040 for 0.3.x-0.4.0, types/100 for 1.x; types/020's ip4/ip6 are read by
cni/config.py): a field of the wrong JSON type, an address or gateway that does not
parse, fails the plugin's ADD ("could not parse prevResult"), and a null entry of
`ips` (or of `interfaces`, where an address names it) makes the plugin panic. Either
way it writes no rule, so `add --cni-config` must write none either.

The rules, taken from upstream v1.9.1's libcni and tried against it and Debian's 1.1.1
(tests/interop/test_prev_result_types.py):
- keys match the fields without regard to case (cni/config.go_field), unknown keys are
  ignored, and a JSON null leaves a field as it was, except an address (`address`,
  `dst`: types.IPNet decodes null itself, and fails on it);
- strings take strings; integers take integers, and floats that are whole numbers
  (libcni re-marshals prevResult through a float64, cni/config.as_handed);
- lists take lists, objects objects;
- addresses (`address`, `dst`) must parse as IP/PREFIX, gateways (`gateway`, `gw`) as
  an IP or "".

Routes' mtu/advmss/priority/table/scope and interfaces' mtu/socketPath/pciID are newer
than Debian's 1.1.1, which ignores them: upstream refuses them mistyped, and so do we
(safety first: no rule for a config the current plugin fails on).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Dict, List, Optional

from portmapctl.cni.config import go_field
from portmapctl.core.validate import shown

Check = Callable[[Any], Optional[str]]  # why a value is refused, else None


def _string(value: Any) -> Optional[str]:
    return None if value is None or isinstance(value, str) else "not a string"


# Go's int (64 bits): a number beyond it does not decode ("1e+20" after libcni's
# re-marshal through a float64, which also rounds 2**63 - 1 up to 2**63).
_GO_INT = (-(2**63), 2**63)


def _integer(value: Any) -> Optional[str]:
    whole = isinstance(value, float) and value.is_integer()
    ok = value is None or whole or (isinstance(value, int) and not isinstance(value, bool))
    if ok and value is not None and not _GO_INT[0] <= float(value) < _GO_INT[1]:
        return "out of range of an integer"
    return None if ok else "not an integer"


def _strings(value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, list):
        return "not a list"
    bad = next((i for i, item in enumerate(value) if _string(item)), None)
    return None if bad is None else f"[{bad}]: not a string"


def _cidr(what: str) -> Check:
    """An IP/PREFIX (`what` it is, for the words). A null too is refused: types.IPNet
    decodes it itself, as "", which does not parse."""

    def check(value: Any) -> Optional[str]:
        wrong = f"invalid {what} {shown(value)}: not IP/PREFIX"
        if not isinstance(value, str) or "%" in value or "/" not in value:
            return wrong
        # Go's ParseCIDR takes a prefix length in digits alone; Python's a netmask too
        # ("10.88.0.5/255.255.0.0"), on which the plugin's ADD fails.
        prefix = value.rpartition("/")[2]
        if not (prefix.isascii() and prefix.isdigit()):
            return wrong
        try:
            ipaddress.ip_interface(value)
        except ValueError:
            return wrong
        return None

    return check


def _ip(value: Any) -> Optional[str]:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "%" in value:
        return "not an IP"
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "not an IP"
    return None


def _struct(fields: Dict[str, Check]) -> Check:
    """An object whose `fields` are checked (each absent one is fine)."""

    def check(value: Any) -> Optional[str]:
        if value is None:
            return None
        if not isinstance(value, dict):
            return "not an object"
        for name, field_check in fields.items():
            if not any(isinstance(k, str) and k.casefold() == name.casefold() for k in value):
                continue
            why = field_check(go_field(value, name))
            if why is not None:
                return f".{name}{why if why.startswith(('.', '[')) else ': ' + why}"
        return None

    return check


def _list_of(element: Check, null_refused: bool = False) -> Check:
    def check(value: Any) -> Optional[str]:
        if value is None:
            return None
        if not isinstance(value, list):
            return "not a list"
        for index, item in enumerate(value):
            if item is None and null_refused:
                return f"[{index}]: null (the plugin fails on it)"
            why = element(item)
            if why is not None:
                return f"[{index}]{why if why.startswith(('.', '[')) else ': ' + why}"
        return None

    return check


_ROUTE = _struct(
    {
        "dst": _cidr("route destination"),
        "gw": _ip,
        "mtu": _integer,
        "advmss": _integer,
        "priority": _integer,
        "table": _integer,
        "scope": _integer,
    }
)
_DNS = _struct(
    {"nameservers": _strings, "domain": _string, "search": _strings, "options": _strings}
)


def _interface(current: bool) -> Check:
    fields: Dict[str, Check] = {"name": _string, "mac": _string, "sandbox": _string}
    if current:
        fields.update(mtu=_integer, socketPath=_string, pciID=_string)
    return _struct(fields)


def _ip_config(current: bool) -> Check:
    fields: Dict[str, Check] = {
        "interface": _integer,
        "address": _cidr("container address"),
        "gateway": _ip,
    }
    if not current:
        fields["version"] = _string
    return _struct(fields)


def refusal(result: Dict[str, Any], version: str) -> Optional[str]:
    """Why the plugin fails on `result` (a prevResult of cniVersion `version`, 0.3.0
    on; the path of the field, then why), else None."""
    current = not version.startswith("0.")
    why = _struct(
        {
            "cniVersion": _string,
            "interfaces": _list_of(_interface(current)),
            "ips": _list_of(_ip_config(current), null_refused=True),
            "routes": _list_of(_ROUTE),
            "dns": _DNS,
        }
    )(result)
    if why is not None:
        return why
    return _named_null_interface(result)


def _named_null_interface(result: Dict[str, Any]) -> Optional[str]:
    """An address naming an interface that is null: the plugin dereferences it."""
    interfaces: List[Any] = go_field(result, "interfaces") or []
    for index, ip in enumerate(go_field(result, "ips") or []):
        named = go_field(ip, "interface")
        if named is None or not 0 <= int(named) < len(interfaces):
            continue
        if interfaces[int(named)] is None:
            return f".ips[{index}].interface: names interfaces[{int(named)}], which is null"
    return None
