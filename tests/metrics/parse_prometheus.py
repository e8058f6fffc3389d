"""Parse a Prometheus text exposition (stdin) with PyPI's prometheus_client,
a parser wirespan did not write, and print its families as JSON.

Output: {"families": [{"name", "type", "help", "samples": [{"name",
"labels", "value"}]}]}. A malformed exposition makes the parser raise, and
this script exit non-zero with the error on stderr.
"""

import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def number(v):
    # JSON has no infinities or NaN; +Inf only appears in `le` labels, but a
    # value could be anything.
    if math.isinf(v) or math.isnan(v):
        return str(v)
    return v


def main():
    text = sys.stdin.read()
    families = []
    for fam in text_string_to_metric_families(text):
        families.append(
            {
                "name": fam.name,
                "type": fam.type,
                "help": fam.documentation,
                "samples": [
                    {"name": s.name, "labels": dict(s.labels), "value": number(s.value)}
                    for s in fam.samples
                ],
            }
        )
    json.dump({"families": families}, sys.stdout)


if __name__ == "__main__":
    main()
