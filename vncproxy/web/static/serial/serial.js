// consoleproxy serial console page: xterm.js on the console WebSocket.
//
// The link is /serial.html?token=TOKEN. The page connects to ws[s]://<its own origin and
// directory>/?token=TOKEN (the Nova serial shape), never anywhere else (the CSP allows only
// this origin). Output arrives as binary frames of terminal bytes; input leaves as binary
// frames of UTF-8 bytes. When the service closes the session, the close code says why and the
// page shows it in words.
import './csp-nonce.js';
import { Terminal } from '../xterm/xterm.mjs';
import { FitAddon } from '../xterm/addon-fit.mjs';
import { wireActions } from '../console/actions.js';

// consoleproxy's close codes (docs/api.md, "Close codes"), in words for the person at the page.
const CLOSE_MESSAGES = {
    4001: 'The console link is not valid: it is wrong, already used or expired. Ask for a new console URL.',
    4002: 'This page is not allowed to open the console (origin refused).',
    4003: 'The console is busy: the instance has as many sessions as it allows.',
    4004: 'Console taken over: someone else opened this console and this session was disconnected.',
    4005: 'Disconnected after a long time without activity.',
    4006: 'Disconnected: the session reached its maximum length.',
    4007: 'The instance stopped: its console is closed.',
    4008: 'The console service is stopping.',
    4009: 'The instance\'s console is not available.',
    4010: 'The instance\'s console closed.',
    4011: 'The session ended after a protocol error.',
    4012: 'Too many failed attempts from this address: wait a minute, then ask for a new console URL.',
    4013: 'Disconnected: this browser could not keep up with the console\'s output.',
    4014: 'An operator ended this session.',
    1000: 'The session ended.',
    1001: 'The console service went away.',
    1008: 'The console link is not valid: it is wrong, already used or expired. Ask for a new console URL.',
    1011: 'The console service had an internal error.',
};
// A refusal before the WebSocket opens (HTTP 401, 403, 409) reaches the page only as 1006.
const REFUSED = 'Could not connect. The console link may be wrong, already used or expired, ' +
    'or the console may be in use by someone else. Ask for a new console URL.';
const LOST = 'The connection to the console was lost.';

const body = document.body;
const statusLine = document.getElementById('status');
const encoder = new TextEncoder();

function setState(state, text) {
    body.dataset.state = state;
    statusLine.textContent = text;
}

export function closeMessage(code, reason, wasOpen) {
    if (code in CLOSE_MESSAGES) {
        return CLOSE_MESSAGES[code];
    }
    if (code === 1006) {
        return wasOpen ? LOST : REFUSED;
    }
    return 'Disconnected (' + code + (reason ? ': ' + reason : '') + ').';
}

export function socketUrl(location, token) {
    // Relative to the page, so a public_url with a path prefix keeps it.
    const url = new URL('./', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    url.search = '?token=' + encodeURIComponent(token);
    url.hash = '';
    return url.href;
}

function start() {
    const params = new URLSearchParams(window.location.search);
    const token = params.get('token') || params.get('access_token');
    const term = new Terminal({
        cursorBlink: true,
        scrollback: 5000,
        fontFamily: 'monospace',
        fontSize: 15,
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(document.getElementById('terminal'));
    fit.fit();
    window.addEventListener('resize', () => fit.fit());
    if (typeof ResizeObserver === 'function') {
        new ResizeObserver(() => fit.fit()).observe(document.getElementById('terminal'));
    }
    window.consoleTerminal = term; // for tests and for the curious at the browser's console

    if (!token) {
        setState('closed', 'This link has no console token. Open the URL the console API returned.');
        term.options.disableStdin = true;
        return;
    }

    // The "Send…" menu: console actions with this page's own token (../console/actions.js).
    wireActions(token, document.getElementById('action-status'), () => term.focus());
    setState('connecting', 'Connecting…');
    const ws = new WebSocket(socketUrl(window.location, token));
    ws.binaryType = 'arraybuffer';
    let wasOpen = false;

    const send = (bytes) => {
        if (ws.readyState === WebSocket.OPEN) {
            ws.send(bytes);
        }
    };
    term.onData((data) => send(encoder.encode(data)));
    term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));

    ws.onopen = () => {
        wasOpen = true;
        setState('open', 'Connected');
        term.focus();
    };
    ws.onmessage = (event) => {
        if (event.data instanceof ArrayBuffer) {
            term.write(new Uint8Array(event.data));
        } else {
            term.write(event.data);
        }
    };
    ws.onclose = (event) => {
        body.dataset.closeCode = String(event.code);
        setState('closed', closeMessage(event.code, event.reason, wasOpen));
        term.options.disableStdin = true;
        term.options.cursorBlink = false;
    };
}

start();
