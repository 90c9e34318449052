from tpos_live.cli.main import main

raise SystemExit(main())
