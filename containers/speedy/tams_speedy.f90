! The project's restart patch for SPEEDY (speedy.f90, Hatfield et al.), written for the TAMS
! orchestrator.  It replaces SPEEDY's 50-line main program `speedy.f90` (build.sh copies it over
! the upstream file in the build directory; the model's other sources are used unchanged apart
! from the two one-line edits build.sh makes: the land and sea modules' `private` statements go,
! so that this program can save and restore their states, and `sst_anomaly_coupling_flag = 0`).
!
! What it adds to the upstream main loop (which is kept line for line inside `run_one_day`):
!   * one TAMS step = one model day (36 model steps of 40 minutes);
!   * a restart file: every prognostic spectral field at both leapfrog time levels, the
!     geopotential, the land model (stl_lm and the fields the atmosphere sees), the sea and
!     sea-ice model, the model clock (datetime, step counter, the seasonal-cycle fractions)
!     and the CO2 absorptivity; restarts happen at the start of a day, where the upstream
!     loop recomputes the daily forcing and the shortwave radiation, so a run restarted from
!     day d continues bit for bit as the uninterrupted run would;
!   * noise: at the start of each day a small barotropic perturbation of the large-scale
!     vorticity (total wavenumbers 1..4, `noise_dim` = 24 standard normals per day, taken from
!     the orchestrator's noise file) times `noise_amp` (1/s);
!   * observables per day: the daily mean (over its 36 steps) of the lowest-level
!     (sigma = 0.95) temperature averaged over a latitude-longitude box (cos-latitude
!     weights), and the same global mean;
!   * errors end with `error stop 1` (upstream's own `stop`s exit 0; the wrapper catches those
!     by the missing completion marker).
!
! Binary files are opened with convert='little_endian' (upstream compiles with -fconvert=swap).
! Input: `namelist.nml` (written by speedy_segment.sh from request.nml) with SPEEDY's own
! groups &params and &date plus the group &tams below.
module tams_io
    use, intrinsic :: iso_fortran_env, only: int64, real64, error_unit
    use types, only: p
    use params
    implicit none

    integer, parameter :: magic = 20260527, version = 1
    integer, parameter :: lmax = 4   ! total wavenumbers 1..lmax carry the noise

contains
    subroutine die(text)
        character(len=*), intent(in) :: text
        write(error_unit, '(A)') 'speedy-tams: '//trim(text)
        error stop 1
    end subroutine

    integer function noise_size()
        integer :: m, n
        noise_size = 0
        do m = 1, mx
            do n = 1, nx
                if (m + n - 2 < 1 .or. m + n - 2 > lmax) cycle
                noise_size = noise_size + merge(1, 2, m == 1)
            end do
        end do
    end function

    !> Add amp * xi to the vorticity's large-scale coefficients, the same at every level and
    !  at both leapfrog time levels.
    subroutine perturb_vorticity(xi, amp)
        use prognostics, only: vor
        real(real64), intent(in) :: xi(:), amp
        integer :: m, n, j
        complex(p) :: d
        j = 0
        do m = 1, mx
            do n = 1, nx
                if (m + n - 2 < 1 .or. m + n - 2 > lmax) cycle
                if (m == 1) then
                    d = cmplx(amp*xi(j+1), 0.0_p, p)
                    j = j + 1
                else
                    d = cmplx(amp*xi(j+1), amp*xi(j+2), p)
                    j = j + 2
                end if
                vor(m,n,:,1) = vor(m,n,:,1) + d
                vor(m,n,:,2) = vor(m,n,:,2) + d
            end do
        end do
    end subroutine

    subroutine write_state(file_name, model_step)
        use prognostics, only: vor, div, t, ps, tr, phi
        use date, only: model_datetime, imont1, tmonth, tyear
        use land_model, only: stl_lm, stl_am, snowd_am, soilw_am, stlcl_ob, snowdcl_ob, soilwcl_ob
        use sea_model, only: sst_om, sice_om, tice_om, sst_am, sice_am, tice_am, ssti_om, &
            & sstcl_ob, sicecl_ob, ticecl_ob, sstan_ob, sstan_am, sstan3
        use shortwave_radiation, only: ablco2
        character(len=*), intent(in) :: file_name
        integer, intent(in) :: model_step
        integer :: u, ios
        character(len=512) :: msg
        open(newunit=u, file=trim(file_name), access='stream', form='unformatted', convert='little_endian', &
             status='replace', action='write', iostat=ios, iomsg=msg)
        if (ios /= 0) call die('cannot write '//trim(file_name)//': '//trim(msg))
        write(u, iostat=ios, iomsg=msg) magic, version, p, model_step, model_datetime, imont1, &
            tmonth, tyear, ablco2, vor, div, t, ps, tr, phi, &
            stl_lm, stl_am, snowd_am, soilw_am, stlcl_ob, snowdcl_ob, soilwcl_ob, &
            sst_om, sice_om, tice_om, sst_am, sice_am, tice_am, ssti_om, &
            sstcl_ob, sicecl_ob, ticecl_ob, sstan_ob, sstan_am, sstan3
        if (ios /= 0) call die('cannot write '//trim(file_name)//': '//trim(msg))
        close(u)
    end subroutine

    subroutine read_state(file_name, model_step)
        use prognostics, only: vor, div, t, ps, tr, phi
        use date, only: model_datetime, imont1, tmonth, tyear
        use land_model, only: stl_lm, stl_am, snowd_am, soilw_am, stlcl_ob, snowdcl_ob, soilwcl_ob
        use sea_model, only: sst_om, sice_om, tice_om, sst_am, sice_am, tice_am, ssti_om, &
            & sstcl_ob, sicecl_ob, ticecl_ob, sstan_ob, sstan_am, sstan3
        use shortwave_radiation, only: ablco2
        character(len=*), intent(in) :: file_name
        integer, intent(out) :: model_step
        integer :: u, ios, m, v, kind_p
        character(len=512) :: msg
        open(newunit=u, file=trim(file_name), access='stream', form='unformatted', convert='little_endian', &
             status='old', action='read', iostat=ios, iomsg=msg)
        if (ios /= 0) call die('cannot open state_in '//trim(file_name)//': '//trim(msg))
        read(u, iostat=ios, iomsg=msg) m, v, kind_p
        if (ios /= 0 .or. m /= magic .or. v /= version .or. kind_p /= p) &
            call die(trim(file_name)//' is not a SPEEDY-TAMS restart file of version 1')
        read(u, iostat=ios, iomsg=msg) model_step, model_datetime, imont1, &
            tmonth, tyear, ablco2, vor, div, t, ps, tr, phi, &
            stl_lm, stl_am, snowd_am, soilw_am, stlcl_ob, snowdcl_ob, soilwcl_ob, &
            sst_om, sice_om, tice_om, sst_am, sice_am, tice_am, ssti_om, &
            sstcl_ob, sicecl_ob, ticecl_ob, sstan_ob, sstan_am, sstan3
        if (ios /= 0) call die('truncated restart file '//trim(file_name)//': '//trim(msg))
        close(u)
    end subroutine
end module

program speedy_tams
    use, intrinsic :: iso_fortran_env, only: int64, real64
    use types, only: p
    use params, only: nsteps, delt, nstrad, ix, il, kx, initialize_params
    use date, only: model_datetime, newdate, initialize_date, isst0, start_datetime
    use shortwave_radiation, only: compute_shortwave
    use coupler, only: couple_sea_land, initialize_coupler
    use time_stepping, only: step, first_step
    use implicit, only: initialize_implicit
    use diagnostics, only: check_diagnostics
    use prognostics, only: vor, div, t, phis, initialize_prognostics
    use forcing, only: set_forcing
    use geometry, only: initialize_geometry, radang
    use spectral, only: initialize_spectral, spec_to_grid, grid_to_spec
    use geopotential, only: initialize_geopotential
    use horizontal_diffusion, only: initialize_horizontal_diffusion
    use physics, only: initialize_physics
    use boundaries, only: initialize_boundaries, phis0
    use sea_model, only: sea_coupling_flag, sst_anomaly_coupling_flag
    use tams_io
    implicit none

    ! &tams: what the wrapper passes on from request.nml
    character(len=4096) :: state_in = '', noise_file = '', daily_file = 'daily.txt', &
                           restart_prefix = 'restart_', done_file = 'tams_done'
    integer :: day0 = 0, n_days = 1, checkpoint_every = 1, noise_dim = 24
    real(real64) :: noise_amp = 2.0e-7_real64
    real(real64) :: box_lon_w = -10.0_real64, box_lon_e = 30.0_real64, &
                    box_lat_s = 40.0_real64, box_lat_n = 60.0_real64
    namelist /tams/ state_in, noise_file, daily_file, restart_prefix, done_file, day0, n_days, &
                    checkpoint_every, noise_dim, noise_amp, box_lon_w, box_lon_e, box_lat_s, &
                    box_lat_n

    integer :: model_step = 1, u, ios, i, j, day, step_in_day
    character(len=4096) :: msg, name
    real(real64), allocatable :: noise(:,:)
    real(real64) :: wbox(ix,il), wglob(ix,il), tg(ix,il), lon, lat, sbox, sglob

    ! ---- read &tams
    open(newunit=u, file='namelist.nml', status='old', action='read', iostat=ios, iomsg=msg)
    if (ios /= 0) call die('namelist.nml: '//trim(msg))
    read(u, nml=tams, iostat=ios, iomsg=msg)
    if (ios /= 0) call die('namelist.nml &tams: '//trim(msg))
    close(u)
    if (n_days < 1 .or. checkpoint_every < 1) call die('n_days and checkpoint_every must be >= 1')

    if (len_trim(noise_file) > 0) then
        if (noise_dim /= noise_size()) then
            write(msg, '(A,I0,A,I0)') 'noise_dim must be ', noise_size(), ', not ', noise_dim
            call die(msg)
        end if
        allocate(noise(noise_dim, n_days))
        open(newunit=u, file=trim(noise_file), access='stream', form='unformatted', convert='little_endian', &
             status='old', action='read', iostat=ios, iomsg=msg)
        if (ios /= 0) call die('noise_file: '//trim(msg))
        read(u, iostat=ios, iomsg=msg) noise
        if (ios /= 0) call die('noise_file is shorter than n_days x noise_dim: '//trim(msg))
        close(u)
    end if

    ! ---- initialization: upstream's `initialize` with the start from rest only at day 0
    call initialize_params
    call initialize_date
    isst0 = (start_datetime%year - 1979) * 12 + start_datetime%month
    if (sea_coupling_flag >= 4) sst_anomaly_coupling_flag = 1
    call initialize_geometry
    call initialize_spectral
    call initialize_geopotential
    call initialize_horizontal_diffusion
    call initialize_physics
    call initialize_boundaries
    if (len_trim(state_in) == 0) then
        call initialize_prognostics          ! from rest (writes one netCDF snapshot)
    else
        phis = grid_to_spec(phis0)           ! the only constant initialize_prognostics sets
    end if
    call initialize_coupler
    call set_forcing(0)
    if (len_trim(state_in) == 0) then
        call first_step
    else
        call read_state(state_in, model_step)
        call initialize_implicit(2*delt)
    end if

    ! ---- box weights on the Gaussian grid (longitudes 0, 3.75, ... east)
    do j = 1, il
        lat = radang(j)*45.0_real64/atan(1.0_real64)
        do i = 1, ix
            lon = (i-1)*360.0_real64/ix
            if (lon > 180.0_real64) lon = lon - 360.0_real64
            wglob(i,j) = cos(radang(j))
            wbox(i,j) = 0.0
            if (lat >= box_lat_s .and. lat <= box_lat_n .and. lon >= box_lon_w &
                .and. lon <= box_lon_e) wbox(i,j) = cos(radang(j))
        end do
    end do
    if (sum(wbox) <= 0) call die('the box (box_lon_w..box_lon_e, box_lat_s..box_lat_n) holds no grid point')
    wbox = wbox/sum(wbox)
    wglob = wglob/sum(wglob)

    open(newunit=u, file=trim(daily_file), status='replace', action='write', iostat=ios, iomsg=msg)
    if (ios /= 0) call die(trim(daily_file)//': '//trim(msg))
    do day = day0 + 1, day0 + n_days
        if (allocated(noise)) call perturb_vorticity(noise(:, day-day0), noise_amp)
        sbox = 0
        sglob = 0
        do step_in_day = 1, nsteps
            ! ---- upstream main loop body, unchanged
            if (mod(model_step-1, nsteps) == 0) call set_forcing(1)
            compute_shortwave = mod(model_step, nstrad) == 1
            call step(2, 2, 2*delt)
            call check_diagnostics(vor(:,:,:,2), div(:,:,:,2), t(:,:,:,2), model_step)
            model_step = model_step + 1
            call newdate
            call couple_sea_land(1+model_step/nsteps)
            ! ---- observables
            tg = spec_to_grid(t(:,:,kx,2), 1)
            sbox = sbox + sum(wbox*tg)
            sglob = sglob + sum(wglob*tg)
        end do
        write(u, '(I0,2(1X,ES24.16E3))') day, sbox/nsteps, sglob/nsteps
        if (mod(day, checkpoint_every) == 0 .or. day == day0 + n_days) then
            write(name, '(A,I0,A)') trim(restart_prefix), day, '.bin'
            call write_state(name, model_step)
        end if
    end do
    close(u)
    open(newunit=u, file=trim(done_file), status='replace', action='write')
    write(u, '(A)') 'ok'
    close(u)
end program
