"""The hand-off console. On this branch only the backtest page lives here; the console's
own package (blueprint, login, CSRF, base.html, PAGES) replaces this file."""
