// consoleproxy's noVNC page (/vnc_auto.html): noVNC's RFB module, from whichever noVNC the
// service serves (the system's or the npm library), with a status line and the "Send…" menu.
//
// It connects to the origin it was loaded from, at the path that ?path= names (Nova's form:
// ?path=websockify%3Ftoken%3DT), and takes no host or port from the link. The console token
// in that path is also the one the menu's actions are sent with. Options: scale=true,
// view_only=true (the browser sends no input; a read-only token is what the service enforces).
import RFB from '../core/rfb.js';
import { wireActions } from './actions.js';

const body = document.body;
const statusLine = document.getElementById('status');

function setState(state, text) {
    body.dataset.state = state;
    statusLine.textContent = text;
}

// The token in ?path=websockify%3Ftoken%3DT (a prefix before websockify changes nothing).
export function pathToken(path) {
    const query = path.includes('?') ? path.slice(path.indexOf('?') + 1) : '';
    return new URLSearchParams(query).get('token');
}

function start() {
    const params = new URLSearchParams(window.location.search);
    const path = (params.get('path') || 'websockify').replace(/^\/+/, '');
    const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    let desktopName = '';
    let refused = '';

    setState('connecting', 'Connecting…');
    const rfb = new RFB(document.getElementById('screen'),
                        scheme + '//' + window.location.host + '/' + path, { shared: true });
    rfb.scaleViewport = params.get('scale') === 'true';
    rfb.viewOnly = params.get('view_only') === 'true';
    window.consoleRfb = rfb; // for tests and for the curious at the browser's console

    wireActions(pathToken(path), document.getElementById('action-status'), () => rfb.focus());
    rfb.addEventListener('desktopname', (e) => { desktopName = e.detail.name; });
    rfb.addEventListener('connect', () => {
        setState('open', 'Connected to ' + desktopName);
    });
    rfb.addEventListener('securityfailure', (e) => { refused = e.detail.reason || ''; });
    rfb.addEventListener('disconnect', (e) => {
        if (refused) {
            setState('closed', 'The console refused the connection: ' + refused);
        } else if (e.detail.clean) {
            setState('closed', 'Disconnected');
        } else {
            setState('closed', 'Could not connect, or the connection was lost. The console ' +
                     'link may be wrong, already used or expired: ask for a new one.');
        }
    });
    rfb.addEventListener('credentialsrequired', () => {
        setState('closed', 'The console asks for a password, which this page does not handle.');
        rfb.disconnect();
    });
}

start();
