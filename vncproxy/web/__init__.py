"""
HTTP and WebSocket faces of consoleproxy: the token API (L{vncproxy.web.api}) and the console
listener (L{vncproxy.web.site}, L{vncproxy.web.websocket}).
"""
