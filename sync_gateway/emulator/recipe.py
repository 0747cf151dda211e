"""Recipe loading: the customers, tokens and tasks the emulator knows about (TOML)."""

from __future__ import annotations

import hashlib
import pathlib
import tomllib
from dataclasses import dataclass, field
from typing import Any, Literal

TaskKind = Literal["script", "instant", "delay"]

BUNDLED_RECIPE = pathlib.Path(__file__).parent / "recipes" / "rest_api_response.toml"


class RecipeError(ValueError):
    """The recipe file is malformed."""


def derived_id(*parts: str) -> str:
    """A stable 24-hex id (MongoDB ObjectId shape) derived from ``parts``."""
    return hashlib.sha1("\x00".join(parts).encode()).hexdigest()[:24]


def _is_hex(value: str, length: int) -> bool:
    return len(value) == length and all(c in "0123456789abcdef" for c in value)


# The supervisor's credentials, lowest first (core/lib/acl.js); "admin" and above see everything.
ROLES = ("viewer", "user", "agent", "manager", "admin", "integration", "owner", "root")


def access_level(role: str) -> int:
    """``ACL.accessLevel``: the role's rank, -1 for an unknown one."""
    return ROLES.index(role) if role in ROLES else -1


@dataclass(frozen=True)
class Member:
    """A token of a member of the organization with its own role (``credential``) and email.

    The customer's plain ``tokens`` are members with role ``admin`` and no email."""

    token: str
    role: str = "admin"
    email: str | None = None
    username: str | None = None
    tags: tuple[str, ...] = ()  # "key:value", as the member's tags {k, v}

    @property
    def is_admin(self) -> bool:
        return access_level(self.role) >= access_level("admin")


@dataclass(frozen=True)
class Customer:
    name: str
    id: str
    tokens: tuple[str, ...]
    members: tuple[Member, ...] = ()

    def member(self, token: str) -> Member | None:
        """Who ``token`` is in this organization (a plain token is an admin), or None."""
        for member in self.members:
            if member.token == token:
                return member
        if token in self.tokens:
            return Member(token=token)
        return None


@dataclass(frozen=True)
class Task:
    id: str
    name: str
    customer: str
    secret: str
    kind: TaskKind = "script"
    script: pathlib.Path | None = None
    runas: str = "python3 %script%"
    timeout: float = 600.0
    delay: float = 1.0
    output: str = '{"ok":true}'
    state: str | None = None
    description: str = ""
    acl: tuple[str, ...] = ()  # the task's viewers (emails), copied to its jobs' ``acl``

    @property
    def script_id(self) -> str:
        return derived_id("script", self.id)


@dataclass(frozen=True)
class Recipe:
    path: pathlib.Path | None
    customers: dict[str, Customer] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)

    def customer_for_token(self, token: str) -> Customer | None:
        found = self.caller_for_token(token)
        return found[0] if found is not None else None

    def caller_for_token(self, token: str) -> tuple[Customer, Member] | None:
        """The organization and member a token authenticates, or None."""
        for customer in self.customers.values():
            member = customer.member(token)
            if member is not None:
                return customer, member
        return None


def _str(table: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise RecipeError(f"{where}: '{key}' must be a string")
    return value


def _num(table: dict[str, Any], key: str, where: str, default: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise RecipeError(f"{where}: '{key}' must be a non-negative number")
    return float(value)


def _strings(table: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    values = table.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise RecipeError(f"{where}: '{key}' must be a list of strings")
    return tuple(values)


def _members(table: dict[str, Any], where: str) -> tuple[Member, ...]:
    raw = table.get("members", [])
    if not isinstance(raw, list):
        raise RecipeError(f"{where}: 'members' must be an array of tables")
    members = []
    for index, item in enumerate(raw):
        at = f"{where}.members[{index}]"
        if not isinstance(item, dict):
            raise RecipeError(f"{at} must be a table")
        role = _str(item, "role", at, "viewer")
        if role not in ROLES:
            raise RecipeError(f"{at}: 'role' must be one of {', '.join(ROLES)}")
        email = item.get("email")
        if email is not None and not isinstance(email, str):
            raise RecipeError(f"{at}: 'email' must be a string")
        tags = tuple(t.lower() for t in _strings(item, "tags", at))
        username = _str(item, "username", at, email or role)
        members.append(Member(_str(item, "token", at), role, email, username, tags))
    return tuple(members)


def load_recipe(path: pathlib.Path | None = None) -> Recipe:
    """Load and validate a recipe; ``None`` loads the bundled one."""
    path = BUNDLED_RECIPE if path is None else path
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RecipeError(f"cannot read recipe {path.name}: {exc}") from exc
    base = path.parent
    customers: dict[str, Customer] = {}
    raw_customers = data.get("customers", {})
    if not isinstance(raw_customers, dict):
        raise RecipeError("'customers' must be a table")
    for name, table in raw_customers.items():
        where = f"customers.{name}"
        if not isinstance(table, dict):
            raise RecipeError(f"{where} must be a table")
        tokens = _strings(table, "tokens", where)
        cid = _str(table, "id", where, derived_id("customer", name))
        members = _members(table, where)
        customers[name] = Customer(name=name, id=cid, tokens=tokens, members=members)
    tasks: dict[str, Task] = {}
    raw_tasks = data.get("tasks", [])
    if not isinstance(raw_tasks, list):
        raise RecipeError("'tasks' must be an array of tables")
    for index, table in enumerate(raw_tasks):
        where = f"tasks[{index}]"
        if not isinstance(table, dict):
            raise RecipeError(f"{where} must be a table")
        task_id = _str(table, "id", where)
        if not _is_hex(task_id, 24):
            raise RecipeError(f"{where}: 'id' must be 24 lowercase hex characters")
        if task_id in tasks:
            raise RecipeError(f"{where}: duplicate task id {task_id}")
        customer = _str(table, "customer", where)
        if customer not in customers:
            raise RecipeError(f"{where}: unknown customer {customer!r}")
        secret = _str(table, "secret", where)
        if not _is_hex(secret, 64):
            raise RecipeError(f"{where}: 'secret' must be 64 lowercase hex characters")
        kind = _str(table, "kind", where, "script")
        if kind not in ("script", "instant", "delay"):
            raise RecipeError(f"{where}: 'kind' must be script, instant or delay")
        script: pathlib.Path | None = None
        if kind == "script":
            script = (base / _str(table, "script", where)).resolve()
            if not script.is_file():
                raise RecipeError(f"{where}: script {script.name} not found")
        state = table.get("state")
        if state is not None and not isinstance(state, str):
            raise RecipeError(f"{where}: 'state' must be a string")
        tasks[task_id] = Task(
            id=task_id,
            name=_str(table, "name", where),
            customer=customer,
            secret=secret,
            kind=kind,  # type: ignore[arg-type]
            script=script,
            runas=_str(table, "runas", where, "python3 %script%"),
            timeout=_num(table, "timeout", where, 600.0),
            delay=_num(table, "delay", where, 1.0),
            output=_str(table, "output", where, '{"ok":true}'),
            state=state,
            description=_str(table, "description", where, ""),
            acl=_strings(table, "acl", where),
        )
    return Recipe(path=path, customers=customers, tasks=tasks)
