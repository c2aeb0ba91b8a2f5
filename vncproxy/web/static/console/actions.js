// consoleproxy: the "Send…" menu of the console pages (the serial page, our noVNC page).
//
// Each item posts a console action to the console listener's /console_actions with the page's
// own console token (docs/api.md, "Console actions"). The service takes them from the
// session's interactive holder only; whatever it answers otherwise (403 for a read-only
// session, 409 when the instance is not running, ...) is shown next to the menu.

// The menu's items: [label, request body without the token].
export const ACTIONS = [
    ['Ctrl+Alt+Del', { action: 'ctrl-alt-del' }],
    ['SysRq: help (h)', { action: 'sysrq', key: 'h' }],
    ['SysRq: sync disks (s)', { action: 'sysrq', key: 's' }],
    ['SysRq: remount read-only (u)', { action: 'sysrq', key: 'u' }],
    ['SysRq: show tasks (t)', { action: 'sysrq', key: 't' }],
    ['SysRq: reboot now (b)', { action: 'sysrq', key: 'b' }],
    ['NMI', { action: 'nmi' }],
];

export function actionsUrl(location) {
    // Relative to the page, like the pages' own files: a public_url with a path prefix keeps it.
    const url = new URL('console_actions', location.href);
    url.search = '';
    url.hash = '';
    return url.href;
}

async function post(token, request) {
    let response;
    try {
        response = await fetch(actionsUrl(window.location), {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ token: token, ...request }),
            credentials: 'omit',
            cache: 'no-store',
        });
    } catch (e) {
        return 'the console service cannot be reached';
    }
    if (response.status === 202) {
        return null;
    }
    const answer = await response.json().catch(() => ({}));
    return answer.error && answer.error.message ? answer.error.message : 'HTTP ' + response.status;
}

// Fills the <details id="actions"> menu and sends its items with `token`; `said` is the
// element that says what happened; `done` is called after each action (to give the console
// its focus back).
export function wireActions(token, said, done) {
    const menu = document.getElementById('actions');
    const list = menu.querySelector('[role="menu"]');
    for (const [label, request] of ACTIONS) {
        const button = document.createElement('button');
        button.type = 'button';
        button.setAttribute('role', 'menuitem');
        button.textContent = label;
        button.addEventListener('click', async () => {
            menu.open = false;
            said.textContent = 'Sending ' + label + '…';
            const refused = await post(token, request);
            said.textContent = refused === null ? 'Sent ' + label : 'Not sent: ' + refused;
            done();
        });
        list.appendChild(button);
    }
}
