"""The document's blocks rendered to Markdown and to standalone HTML through jinja2 templates.

A block is a tuple: ``("h", level, text)``, ``("p", text)``, ``("ul", items)``,
``("table", head, rows)`` or ``("img", alt, file)``. Text may use ``**bold**`` and ``code``
in backticks; :func:`scrub` removes machine paths and storage URLs before anything is written.
"""

from __future__ import annotations

import re

import jinja2
from markupsafe import Markup, escape

ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.+@-]+/)+([\w.+@-]*)")
URL = re.compile(r"\b[\w+]+://\S+")


def scrub(text) -> str:
    """No machine paths or storage URLs in report text: keep a path's last part only."""
    text = URL.sub("<url>", str(text))
    return ABSOLUTE_PATH.sub(lambda m: f".../{m.group(1)}", text)


def md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def inline_html(text) -> Markup:
    """The little inline Markdown the report uses (**bold**, `code`) as HTML."""
    text = str(escape(str(text)))
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return Markup(re.sub(r"`(.+?)`", r"<code>\1</code>", text))


MARKDOWN = """\
{%- for b in blocks -%}
{%- if not loop.first %}

{% endif -%}
{%- if b[0] == "h" %}{{ "#" * b[1] }} {{ b[2] }}
{%- elif b[0] == "p" %}{{ b[1] }}
{%- elif b[0] == "ul" %}{% for item in b[1] %}- {{ item }}{% if not loop.last %}
{% endif %}{% endfor %}
{%- elif b[0] == "table" %}| {{ b[1] | map("md_cell") | join(" | ") }} |
|{{ "---|" * (b[1] | length) }}
{%- for row in b[2] %}
| {{ row | map("md_cell") | join(" | ") }} |
{%- endfor %}
{%- elif b[0] == "img" %}![{{ b[1] }}]({{ b[2] }})
{%- endif -%}
{%- endfor %}
"""

HTML = """\
<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{ title }}</title><style>
body{font-family:sans-serif;max-width:80em;margin:2em auto;line-height:1.4}
table{border-collapse:collapse;font-size:85%}td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
img{max-width:100%}</style></head><body>
{% for b in blocks -%}
{% if b[0] == "h" %}<h{{ b[1] }}>{{ b[2] | inline }}</h{{ b[1] }}>
{% elif b[0] == "p" %}<p>{{ b[1] | inline }}</p>
{% elif b[0] == "ul" %}<ul>{% for item in b[1] %}<li>{{ item | inline }}</li>{% endfor %}</ul>
{% elif b[0] == "table" %}<table><thead><tr>{% for h in b[1] %}<th>{{ h | inline }}</th>{% endfor %}</tr></thead><tbody>
{%- for row in b[2] %}<tr>{% for v in row %}<td>{{ v | inline }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>
{% elif b[0] == "img" %}<p><img src="{{ b[2] }}" alt="{{ b[1] }}"></p>
{% endif -%}
{% endfor %}</body></html>
"""

_ENV = jinja2.Environment(autoescape=False, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
_ENV.filters.update(md_cell=md_cell, inline=inline_html)
_HTML_ENV = jinja2.Environment(autoescape=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
_HTML_ENV.filters.update(inline=inline_html)


def markdown(blocks: list[tuple]) -> str:
    """The blocks as Markdown."""
    return _ENV.from_string(MARKDOWN).render(blocks=blocks).rstrip("\n") + "\n"


def to_html(blocks: list[tuple], title: str) -> str:
    """The same blocks as a standalone HTML page."""
    return _HTML_ENV.from_string(HTML).render(blocks=blocks, title=title)
