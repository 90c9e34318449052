from tpos_live.cli import main

raise SystemExit(main())
