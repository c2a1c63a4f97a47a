//! BGP announcer: codec wrapper, sans-IO session FSM, UPDATE packing, tokio session driver.
