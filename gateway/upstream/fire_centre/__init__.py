"""The city fire remote-monitoring centre (GB/T 26875.3-2011): the gateway as the site's
user information transmission device (用户信息传输装置).

``codec`` (frames and information objects, pure), ``mapping`` (alarms and readings to
information objects), ``queue`` (frames waiting for the centre's confirm, in SQLite),
``link`` (the TCP client: confirm, resend, heartbeat, the centre's requests),
``service`` (what the gateway builds and runs). Imported only when a site configures
``fire_centre``.
"""
