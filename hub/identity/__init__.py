"""Who a person is: NHS number first, then MOD service number and other identifiers, then a
demographic score that only ever asks a person to decide."""
