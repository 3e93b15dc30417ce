"""What follows a model's search: its winner tested once on the test split (``finalists``), refit and bundled
(``bundles``) as Ray work as soon as its study is done (``endphase``), the classical baselines (``baseline``), the
repeats at other seeds (``repeats``), and the exports (``export``, ``wrapup``)."""
