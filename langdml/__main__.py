from langdml.cli import main

raise SystemExit(main())
