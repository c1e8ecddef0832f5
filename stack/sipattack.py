"""Broken and hostile SIP, sent as raw UDP datagrams: what an assessor throws at the SIP
door (docs/security.md), and what the project's own tests and ``bench/sip_attack.py``
run against a real stack.

Each case is a function that builds the bytes of one request (or a short exchange:
INVITE then CANCEL) from a ``Target``; ``run_case`` sends it from its own socket on a
loopback address, answers what must be answered (ACK to a final response, CANCEL, BYE
for a call that was answered anyway) and returns what came back. Nothing here is valid
SIP on purpose except what a case needs to reach the part it attacks.

    python -m stack.sipattack 127.0.0.1:5060 --did 0312345678 --source 127.0.0.2

Only loopback targets are accepted.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import select
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

SDP_TEMPLATE = ("v=0\r\no=- {sess} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
                "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
                "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ?([^\r\n]*)")


@dataclass(frozen=True)
class Target:
    host: str  # Asterisk's SIP address
    port: int
    did: str  # a number the trunk routes
    source: str = "127.0.0.2"  # the trunk's address (trunk.match)
    carrier: str = "carrier"  # the trunk's endpoint name


@dataclass
class Response:
    status: int
    reason: str
    raw: bytes

    def header(self, name: str) -> str:
        for line in self.raw.split(b"\r\n")[1:]:
            if not line:
                break
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode(errors="replace")
        return ""


@dataclass
class Outcome:
    case: str
    sent: int = 0
    responses: list[int] = field(default_factory=list)
    answered: bool = False  # a 200 OK to an INVITE: the door let it in
    challenged: bool = False  # 401/407
    # per Call-ID: the final responses recorded, the answered calls hung up
    final: set[str] = field(default_factory=set, repr=False)
    done: set[str] = field(default_factory=set, repr=False)
    # (flood) the wall-clock times of the first and the last request sent
    first_sent: float = field(default=0.0, repr=False)
    last_sent: float = field(default=0.0, repr=False)

    def as_dict(self) -> dict[str, object]:
        return {"case": self.case, "sent": self.sent, "responses": self.responses,
                "answered": self.answered, "challenged": self.challenged}


class Wire:
    """One UDP socket on ``source`` talking to the target."""

    def __init__(self, target: Target, source: str | None = None) -> None:
        check_loopback(target.host)
        self.target = target
        self.local = source or target.source
        check_loopback(self.local)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.local, 0))
        self.port = int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, (self.target.host, self.target.port))

    def receive(self, timeout: float, limit: float = 5.0) -> Iterator[Response]:
        """Responses until ``timeout`` passes without one, ``limit`` seconds at most. Other
        datagrams (the early media's RTP: the offer names this socket's port) are
        dropped and do not count as an answer."""
        deadline = time.monotonic() + limit
        quiet = time.monotonic() + timeout
        while (left := min(deadline, quiet) - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                return
            data, _addr = self.sock.recvfrom(65535)
            status = _STATUS.match(data)
            if status:
                quiet = time.monotonic() + timeout
                yield Response(int(status[1]), status[2].decode(errors="replace"), data)


def check_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{host} is not a loopback address: this tool attacks only "
                         "loopback targets")


# ------------------------------------------------------------------ request building

@dataclass
class Dialog:
    """The identifiers of one request's transaction and dialog."""

    call_id: bytes
    branch: bytes
    tag: bytes
    cseq: int = 1

    @classmethod
    def new(cls, label: str) -> Dialog:
        token = os.urandom(6).hex()
        return cls(f"{label}-{token}@attack".encode(), f"z9hG4bK{token}".encode(),
                   token[:8].encode())


def request(method: str, wire: Wire, dialog: Dialog, *, user: str | None = None,
            from_user: str = "0901234567", from_name: bytes = b"", body: bytes = b"",
            extra: list[bytes] | None = None, content_length: int | None = None,
            uri: bytes | None = None, cseq_method: str | None = None) -> bytes:
    t = wire.target
    user = t.did if user is None else user
    target_uri = uri or f"sip:{user}@{t.host}:{t.port}".encode()
    display = b'"' + from_name + b'" ' if from_name else b""
    lines = [
        method.encode() + b" " + target_uri + b" SIP/2.0",
        f"Via: SIP/2.0/UDP {wire.local}:{wire.port};branch=".encode() + dialog.branch
        + b";rport",
        b"Max-Forwards: 70",
        display + f"<sip:{from_user}@{wire.local}>;tag=".encode() + dialog.tag,
        f"To: <sip:{user}@{t.host}>".encode(),
        b"Call-ID: " + dialog.call_id,
        f"CSeq: {dialog.cseq} {cseq_method or method}".encode(),
        f"Contact: <sip:{from_user}@{wire.local}:{wire.port}>".encode(),
        b"User-Agent: madoguchi-sipattack",
    ]
    lines[3] = b"From: " + lines[3]
    lines += extra or []
    if body:
        lines.append(b"Content-Type: application/sdp")
    length = len(body) if content_length is None else content_length
    lines.append(f"Content-Length: {length}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def sdp(wire: Wire, port: int = 0) -> bytes:
    # port 0 would decline the stream: a real port nobody listens on instead
    return SDP_TEMPLATE.format(sess=int(time.time()), ip=wire.local,
                               port=port or 40000 + wire.port % 20000).encode()


def cancel_for(invite: bytes) -> bytes:
    """The CANCEL of an INVITE: same Request-URI, Via branch, From, To, Call-ID, CSeq
    number (RFC 3261 9.1)."""
    head, _, _ = invite.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    uri = lines[0].split(b" ")[1]
    keep = [line for line in lines[1:] if line.split(b":")[0].lower() in
            (b"via", b"from", b"to", b"call-id", b"max-forwards")]
    cseq = next(line for line in lines if line.lower().startswith(b"cseq:"))
    number = cseq.split(b":")[1].split()[0]
    return b"\r\n".join([b"CANCEL " + uri + b" SIP/2.0", *keep,
                         b"CSeq: " + number + b" CANCEL", b"Content-Length: 0"]) + b"\r\n\r\n"


def ack_for(invite: bytes, response: Response) -> bytes:
    """The ACK of a final response to ``invite`` (the To tag from the response); a 2xx
    is acknowledged in a transaction of its own (a new branch, RFC 3261 13.2.2.4)."""
    head, _, _ = invite.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    uri = lines[0].split(b" ")[1]
    out = [b"ACK " + uri + b" SIP/2.0"]
    for line in lines[1:]:
        key = line.split(b":")[0].lower()
        if key == b"via" and response.status < 300:
            out.append(re.sub(rb"branch=[^;]+", b"branch=z9hG4bK" + os.urandom(6).hex().encode(),
                              line))
        elif key in (b"via", b"from", b"call-id", b"max-forwards"):
            out.append(line)
        elif key == b"cseq":
            out.append(b"CSeq: " + line.split(b":")[1].split()[0] + b" ACK")
    out.append(b"To: " + response.header("To").encode())
    out.append(b"Content-Length: 0")
    return b"\r\n".join(out) + b"\r\n\r\n"


def bye_for(invite: bytes, response: Response) -> bytes:
    head, _, _ = invite.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    uri = lines[0].split(b" ")[1]
    via = next(line for line in lines if line.lower().startswith(b"via:"))
    out = [b"BYE " + uri + b" SIP/2.0",
           re.sub(rb"branch=[^;]+", b"branch=z9hG4bK" + os.urandom(6).hex().encode(), via)]
    for line in lines[1:]:
        key = line.split(b":")[0].lower()
        if key in (b"from", b"call-id", b"max-forwards"):
            out.append(line)
        elif key == b"cseq":
            out.append(b"CSeq: " + str(int(line.split(b":")[1].split()[0]) + 1).encode()
                       + b" BYE")
    out.append(b"To: " + response.header("To").encode())
    out.append(b"Content-Length: 0")
    return b"\r\n".join(out) + b"\r\n\r\n"


# ------------------------------------------------------------------ the cases

Builder = Callable[[Wire, Dialog], bytes]


def _invite(body: bytes | None = None, **kw: Any) -> Builder:
    def build(wire: Wire, dialog: Dialog) -> bytes:
        return request("INVITE", wire, dialog, body=sdp(wire) if body is None else body, **kw)
    return build


def _with_call_id(call_id: bytes) -> Builder:
    def build(wire: Wire, dialog: Dialog) -> bytes:
        dialog.call_id = call_id + os.urandom(4).hex().encode()
        return request("INVITE", wire, dialog, body=sdp(wire))
    return build


def _raw_edit(edit: Callable[[bytes], bytes]) -> Builder:
    def build(wire: Wire, dialog: Dialog) -> bytes:
        return edit(request("INVITE", wire, dialog, body=sdp(wire)))
    return build


#: name -> how to build the request; each is sent from the trunk's address unless the
#: case is about the address
MALFORMED: dict[str, Builder] = {
    "call_id_not_utf8": _with_call_id(b"\xff\xfe\xc3("),
    "call_id_latin1": _with_call_id(b"caf\xe9-"),
    "from_name_not_utf8": _invite(from_name=b"\xff\xfe\x80\x81"),
    "from_name_overlong_utf8": _invite(from_name=b"\xc0\xaf\xe0\x80\xaf"),
    "from_user_not_utf8": _raw_edit(lambda m: m.replace(b"From: <sip:", b"From: <sip:\xff\xfe",
                                                        1)),
    "to_not_utf8": _raw_edit(lambda m: m.replace(b"To: <sip:", b"To: \"\xff\xfe\" <sip:", 1)),
    "request_uri_not_utf8": _raw_edit(lambda m: m.replace(b"INVITE sip:", b"INVITE sip:\xff",
                                                          1)),
    "nul_in_header": _invite(extra=[b"Subject: a\x00b"]),
    "nul_in_call_id": _with_call_id(b"nul\x00id-"),
    "user_agent_not_utf8": _invite(extra=[b"X-Note: \xfe\xff\xfd"]),
    "content_length_too_long": _invite(content_length=4000),
    "content_length_too_short": _invite(content_length=10),
    "content_length_negative": _invite(content_length=-5),
    "huge_header": _invite(extra=[b"Subject: " + b"A" * 3500]),
    "many_headers": _invite(extra=[f"X-H{i}: {i}".encode() for i in range(300)]),
    "huge_call_id": _with_call_id(b"x" * 2000),
    "sdp_garbage": _invite(body=b"v=0\r\nm=audio notaport RTP/AVP \xff\r\nc=IN IP4\r\n"),
    "sdp_no_common_codec": _raw_edit(lambda m: m.replace(b"RTP/AVP 0 101", b"RTP/AVP 99")
                                     .replace(b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:99 X/8000")),
    "sdp_huge_port": _raw_edit(lambda m: re.sub(rb"m=audio \d+", b"m=audio 99999999", m)),
    "sdp_not_utf8": _raw_edit(lambda m: m.replace(b"s=-", b"s=\xff\xfe")),
    "no_call_id": _raw_edit(lambda m: re.sub(rb"Call-ID: [^\r]*\r\n", b"", m)),
    "no_cseq": _raw_edit(lambda m: re.sub(rb"CSeq: [^\r]*\r\n", b"", m)),
    "no_via": _raw_edit(lambda m: re.sub(rb"Via: [^\r]*\r\n", b"", m)),
    "cseq_method_mismatch": _invite(cseq_method="BYE"),
    "max_forwards_zero": _raw_edit(lambda m: m.replace(b"Max-Forwards: 70",
                                                       b"Max-Forwards: 0")),
    "bad_request_uri": _raw_edit(lambda m: m.replace(b"INVITE sip:", b"INVITE ::sip:<<", 1)),
    "bad_sip_version": _raw_edit(lambda m: m.replace(b" SIP/2.0\r\n", b" SIP/9.9\r\n", 1)),
    "truncated": _raw_edit(lambda m: m[: len(m) // 3]),
    "binary_noise": lambda wire, dialog: os.urandom(600),
    "crlf_only": lambda wire, dialog: b"\r\n\r\n\r\n\r\n",
}


def run_case(target: Target, name: str, builder: Builder, *, source: str | None = None,
             wait: float = 0.4) -> Outcome:
    """Send one request; ACK (and BYE) what comes back; wait until it goes quiet. An
    INVITE still ringing then (a provisional answer, no final one: the greeting is early
    media) is cancelled, as a caller who gives up, and its end waited for."""
    outcome = Outcome(name)
    with Wire(target, source) as wire:
        dialog = Dialog.new(name)
        message = builder(wire, dialog)
        wire.send(message)
        outcome.sent = 1
        sent = {dialog.call_id.decode(errors="replace"): message}
        _drain(wire, sent, outcome, wait)
        if message.startswith(b"INVITE") and outcome.responses:
            _cancel_ringing(wire, sent, outcome, wait)
    return outcome


def _cancel_ringing(wire: Wire, invites: dict[str, bytes], outcome: Outcome,
                    wait: float) -> None:
    """CANCEL every INVITE without a final response yet (ringing: the greeting is early
    media; or a CANCEL sent before Asterisk had its transaction got 481) and wait for
    their ends, as a caller who hung up would."""
    ringing = [invite for call_id, invite in invites.items() if call_id not in outcome.done]
    for invite in ringing:
        wire.send(cancel_for(invite))
        outcome.sent += 1
    if ringing:
        _drain(wire, invites, outcome, wait)


def _finish(wire: Wire, invite: bytes, response: Response, outcome: Outcome) -> None:
    """ACK a final response (a retransmission again); BYE an answered call once."""
    if not invite.startswith(b"INVITE") or response.status < 200:
        return
    first = response.header("Call-ID") not in outcome.done
    outcome.done.add(response.header("Call-ID"))
    if response.status in (401, 407):
        outcome.challenged = True
    wire.send(ack_for(invite, response))
    if response.status < 300 and first:
        outcome.answered = True
        wire.send(bye_for(invite, response))


def invite_cancel(target: Target, delays: list[float], *, source: str | None = None,
                  wait: float = 1.0) -> Outcome:
    """INVITE then CANCEL after each delay (seconds; 0: in the next datagram), one dialog
    each, all from one socket: the race between a caller's hang-up and routing."""
    outcome = Outcome("invite_cancel_race")
    with Wire(target, source) as wire:
        invites: dict[str, bytes] = {}
        for delay in delays:
            dialog = Dialog.new("race")
            invite = request("INVITE", wire, dialog, body=sdp(wire))
            invites[dialog.call_id.decode()] = invite
            wire.send(invite)
            if delay:
                _drain(wire, invites, outcome, delay)
            wire.send(cancel_for(invite))
            outcome.sent += 2
        _drain(wire, invites, outcome, wait)
        _cancel_ringing(wire, invites, outcome, wait)
    return outcome


def flood(target: Target, count: int, *, seconds: float, source: str | None = None,
          wait: float = 1.0, acknowledge: bool = True, rate: float = 0.0,
          cancel: bool = True) -> Outcome:
    """``count`` INVITE+CANCEL pairs from one address, as fast as allowed (or ``rate`` a
    second) within ``seconds`` (bounded in both). ``acknowledge=False``: as an attacker, who never
    acknowledges an answer nor hangs up (the answered ones stay until Asterisk gives up
    waiting for the ACK). ``cancel=False``: INVITEs alone, callers who hold on."""
    outcome = Outcome("flood_invite_cancel" if cancel else "flood_invite")
    deadline = time.monotonic() + seconds
    with Wire(target, source) as wire:
        invites: dict[str, bytes] = {}
        for i in range(count):
            if time.monotonic() > deadline:
                break
            dialog = Dialog.new(f"flood{i}")
            invite = request("INVITE", wire, dialog, body=sdp(wire))
            invites[dialog.call_id.decode()] = invite
            outcome.first_sent = outcome.first_sent or time.time()
            wire.send(invite)
            outcome.sent += 1
            if cancel:
                wire.send(cancel_for(invite))
                outcome.sent += 1
            outcome.last_sent = time.time()
            if rate:
                _drain(wire, invites if acknowledge else {}, outcome, 1.0 / rate, 1.0 / rate)
            elif i % 20 == 19:
                _drain(wire, invites if acknowledge else {}, outcome, 0.0)
        _drain(wire, invites if acknowledge else {}, outcome, wait)
    return outcome


def _drain(wire: Wire, invites: dict[str, bytes], outcome: Outcome, timeout: float,
           limit: float = 5.0) -> None:
    """Read the responses to the INVITEs (those to CANCEL, ACK and BYE aside): record each
    final one once, acknowledge every one."""
    for response in wire.receive(timeout, limit):
        if not response.header("CSeq").endswith("INVITE"):
            continue
        call_id = response.header("Call-ID")
        key = f"{call_id} {response.status}"
        if response.status < 200 or key not in outcome.final:
            outcome.responses.append(response.status)
            outcome.final.add(key)
        # (a request without a usable Call-ID is answered with what it sent: match any)
        invite = invites.get(call_id) or (next(iter(invites.values())) if len(invites) == 1
                                          else None)  # (no invites: nothing is answered)
        if invite is not None:
            _finish(wire, invite, response, outcome)


def spoofed_trunk(target: Target, source: str) -> Outcome:
    """An INVITE from an address that is not the trunk's, From the trunk's name."""
    outcome = run_case(target, "spoofed_trunk", _invite(from_user=target.carrier),
                       source=source, wait=1.0)
    return outcome


def register_as(target: Target, user: str, source: str) -> Response | None:
    """A REGISTER for ``user`` without credentials: the first answer."""
    with Wire(target, source) as wire:
        dialog = Dialog.new("reg")
        wire.send(request("REGISTER", wire, dialog, user=user, from_user=user,
                          uri=f"sip:{target.host}:{target.port}".encode(),
                          extra=[b"Expires: 60"]))
        return next(iter(wire.receive(1.0)), None)


def run_all(target: Target, *, spoof_source: str = "127.0.0.9") -> list[Outcome]:
    """Every malformed case once, the INVITE+CANCEL race and the spoofed trunk."""
    out = [run_case(target, name, build) for name, build in MALFORMED.items()]
    out.append(invite_cancel(target, [0, 0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]))
    out.append(spoofed_trunk(target, spoof_source))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="Asterisk's SIP address, host:port (loopback)")
    parser.add_argument("--did", required=True, help="a number the trunk routes")
    parser.add_argument("--source", default="127.0.0.2", help="the trunk's address")
    parser.add_argument("--carrier", default="carrier", help="the trunk's endpoint name")
    parser.add_argument("--spoof-source", default="127.0.0.9")
    parser.add_argument("--flood", type=int, default=0,
                        help="INVITE+CANCEL pairs to send after the cases (at most 20000)")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    target = Target(host, int(port), args.did, args.source, args.carrier)
    try:
        outcomes = run_all(target, spoof_source=args.spoof_source)
        if args.flood:
            outcomes.append(flood(target, min(args.flood, 20000), seconds=60))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for outcome in outcomes:
        print(json.dumps(outcome.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
