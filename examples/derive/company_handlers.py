"""The handlers of README's "Derived databases: cnp derive" example (qvarn-mr's company reports)."""

from couch_named_python.mr import count, handler, item, join

org_key = item("_id")              # map: a row per org, keyed by its id
report_org = item("org")           # map: a row per report, keyed by the org it belongs to
rows_per_org = handler(count)      # reduce: how many rows a key has (the org and its reports)
company_report = join({            # reduce: one document per org with its report's fields
    "orgs": {"_id": "org_id", "name": None},
    "reports": {"_id": "report_id", "title": None},
})
