// xterm.js adds <style> elements at run time. The page's Content-Security-Policy allows
// styles from this origin and, for those elements, the nonce this page was served with (a
// new one per response): stamp it on every <style> as it is created, before it is inserted.
// Imported first by serial.js, so it runs before xterm.js creates anything.
const carrier = document.querySelector('script[nonce]');
const nonce = carrier ? carrier.nonce : '';
if (nonce) {
    const createElement = Document.prototype.createElement;
    Document.prototype.createElement = function (name, options) {
        const element = createElement.call(this, name, options);
        if (String(name).toLowerCase() === 'style') {
            element.setAttribute('nonce', nonce);
        }
        return element;
    };
}
